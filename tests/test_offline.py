"""The offline toolbox on captures built with the writer (no root needed)."""

import io
import json
import random
import re
import shutil
import socket
import subprocess
import threading

import pytest
from conftest import build_capture, make_header, wtrec_cmd
from test_show import check_golden
from typer.testing import CliRunner

from wtrec.cli.app import app
from wtrec.format import CaptureReader, read_index
from wtrec.records import FdIdentity, FdInfo, Header, IoEvent, Lost
from wtrec.replay import adjust_speed, cap_relative_time, paced, timed, to_relative_time
from wtrec.tools.grep import iter_stream_matches
from wtrec.tools.redaction import find, rules

runner = CliRunner()
BASE = 1_000_000_000
KEY_AND_CARD = (b"-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n"
                b"AKIAABCDEFGHIJKLMNOP 4111 1111 1111 1112")
HTTP = (b"POST /login HTTP/1.1\r\nHost: shop\r\nAuthorization: Bearer abcdefghijklmnop\r\n"
        b"Cookie: sid=12345\r\n\r\npassword=hunter2&card=4111 1111 1111 1111\n")


pytestmark = pytest.mark.usefixtures("utc")  # golden times are UTC


def event(i, data, pid=10, fd=3, direction="out", syscall="write", ret=None, count=None, ts=None):
    count = len(data) if count is None else count
    ret = (len(data) if direction == "in" else count) if ret is None else ret
    return IoEvent(BASE + i * 1_000_000 if ts is None else ts, pid, pid, 1000, b"app", fd,
                   count, data, syscall=syscall, ret=ret, seq=i, direction=direction)


def conversation() -> list:
    """pid 10 talks HTTP on fd 3 (split across writes); pid 20 writes a log on fd 5."""
    return [
        FdInfo(BASE, 10, 3, FdIdentity("tcp", "127.0.0.1:40000", "127.0.0.1:8080")),
        event(0, b"GET /index.html HT", syscall="sendto"),
        event(1, b"TP/1.1\r\nHost: a\r\n\r\n", syscall="sendto"),
        event(2, b"HTTP/1.1 200 OK\r\n\r\nhello", direction="in", syscall="recvfrom", count=4096),
        FdInfo(BASE + 3_000_000, 20, 5, FdIdentity("file", path="/var/log/app.log")),
        event(3, b"log line one\n", pid=20, fd=5),
        Lost(BASE + 3_500_000, 2, "ringbuf"),
        event(4, b"log line two\n", pid=20, fd=5),
        event(5, b"GET /second", ts=BASE + 9_000_000_000),  # nine seconds later
    ]


@pytest.fixture
def conv(tmp_path):
    path = tmp_path / "conv.wtrace"
    path.write_bytes(build_capture(conversation(), header=make_header(format_minor=2)))
    return path


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "sample.wtrace"
    path.write_bytes(build_capture())
    return path


def read(path) -> tuple[list, CaptureReader]:
    with open(path, "rb") as f:
        reader = CaptureReader(f)
        return list(reader), reader


def events_of(path) -> list[IoEvent]:
    return [r for r in read(path)[0] if isinstance(r, IoEvent)]


def no_raw_control_bytes(text: str) -> bool:
    return not any((ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0 or ord(c) > 0xFF
                   for c in text)


# ---------------------------------------------------------------- index and info


def test_a_clean_close_writes_an_index_that_matches_a_scan(conv):
    with open(conv, "rb") as f:
        index, why = read_index(f)
    assert why == "indexed" and index is not None
    assert sum(e.events for e in index.frames) == 6
    scanned = subprocess.run(wtrec_cmd("info", "--json", "-"), input=conv.read_bytes(),
                             capture_output=True, check=True)  # a pipe: no seeking
    indexed = runner.invoke(app, ["info", "--json", str(conv)])
    a, b = json.loads(scanned.stdout), json.loads(indexed.stdout)
    assert (a["source"], b["source"]) == ("scan", "index")
    for key in ("events", "lost", "processes", "fds", "frames", "compressed_bytes",
                "content_bytes", "first_wall_ns", "last_wall_ns", "closed", "records"):
        assert a[key] == b[key], key


def test_info_golden(sample):
    result = runner.invoke(app, ["info", str(sample)])
    assert result.exit_code == 0, result.output
    check_golden("info.txt", result.stdout.replace(str(sample), "sample.wtrace"))
    assert no_raw_control_bytes(result.stdout)


def test_info_of_a_killed_recording_scans_and_warns(tmp_path):
    path = tmp_path / "killed.wtrace"
    path.write_bytes(build_capture(end=False))
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0
    assert "scanned (no index" in result.stdout and "closed      no:" in result.stdout
    assert "capture ends early after 4 events" in result.stderr


def test_an_index_that_lies_is_not_trusted(tmp_path):
    import zlib

    import msgpack

    from wtrec.wtrace.index import FOOTER, INDEX_TAG

    data = bytearray(build_capture())
    offset = read_index(io.BytesIO(bytes(data)))[0].offset
    length = int.from_bytes(data[offset + 4:offset + 8], "little")
    body = msgpack.unpackb(bytes(data[offset + 8:offset + 8 + length - FOOTER.size]), raw=False)
    for lie in ({"all": [10**12, 1, 1, 0, 0]}, {"frames": [[16, 1, 2, 3, 4, None, None]]},
                {"processes": [[1, "not bytes", 0, 0, [0] * 5, [0] * 5]]}, {"version": 99},
                {"frames": "x"}):
        packed = msgpack.packb({**body, **lie}, use_bin_type=True)
        payload = packed + FOOTER.pack(offset, zlib.crc32(packed), INDEX_TAG)
        forged = bytes(data[:offset]) + (0x184D2A5D).to_bytes(4, "little") + \
            len(payload).to_bytes(4, "little") + payload
        index, why = read_index(io.BytesIO(forged))
        assert index is None and why.startswith("index ignored"), lie


# ---------------------------------------------------------------- filter


def test_filter_keeps_the_chosen_events_their_fd_records_and_says_how(conv, tmp_path):
    out = tmp_path / "f.wtrace"
    result = runner.invoke(app, ["filter", str(conv), "-o", str(out), "--pid", "10",
                                 "--syscall", "sendto", "--until", "5"])
    assert result.exit_code == 0, result.output
    records, reader = read(out)
    assert [e.seq for e in records if isinstance(e, IoEvent)] == [0, 1]
    assert [type(r).__name__ for r in records] == ["Header", "FdInfo", "IoEvent", "IoEvent",
                                                   "Lost", "End"]
    step = reader.header.provenance[-1]
    assert step.op == "filter" and ("pid", "10") in step.notes and ("until", "5") in step.notes
    assert step.inputs[0].host == "testhost" and reader.end.events == 2
    assert "2 of 6 events kept" in result.stderr


@pytest.mark.parametrize("args, seqs", [
    (["--match", "line (one|two)"], [3, 4]),
    (["--match", "GET", "--invert"], [1, 2, 3, 4]),
    (["--fd", "5", "--comm", "app"], [3, 4]),
    (["--since", "1"], [5]),
    (["--since", "2023-11-14T22:13:20.002", "--until", "2023-11-14T22:13:20.0035"], [2, 3]),
])
def test_filter_options(conv, tmp_path, args, seqs):
    out = tmp_path / "f.wtrace"
    result = runner.invoke(app, ["filter", str(conv), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    assert [e.seq for e in events_of(out)] == seqs


def test_filter_never_overwrites_without_force_nor_its_own_input(conv, tmp_path):
    out = tmp_path / "exists.wtrace"
    out.write_bytes(b"keep me")
    result = runner.invoke(app, ["filter", str(conv), "-o", str(out)])
    assert result.exit_code == 7 and out.read_bytes() == b"keep me"
    before = conv.read_bytes()
    result = runner.invoke(app, ["filter", str(conv), "-o", str(conv), "--force"])
    assert result.exit_code == 2 and conv.read_bytes() == before
    result = runner.invoke(app, ["filter", str(conv), "-o", str(tmp_path / "x"), "--since", "soon"])
    assert result.exit_code == 2 and "ISO time" in result.stderr


def test_filter_pipes_stdin_to_stdout(conv):
    done = subprocess.run(wtrec_cmd("filter", "-", "-o", "-", "--pid", "20"),
                          input=conv.read_bytes(), capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    reader = CaptureReader(io.BytesIO(done.stdout))
    assert [e.data for e in reader if isinstance(e, IoEvent)] == [b"log line one\n",
                                                                  b"log line two\n"]


# ---------------------------------------------------------------- grep


def test_grep_exit_codes_like_grep(conv, tmp_path):
    assert runner.invoke(app, ["grep", "hello", str(conv)]).exit_code == 0
    assert runner.invoke(app, ["grep", "absent", str(conv)]).exit_code == 1
    assert runner.invoke(app, ["grep", "(", str(conv)]).exit_code == 2
    assert runner.invoke(app, ["grep", "x", str(tmp_path / "missing")]).exit_code == 2
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["grep", "x", str(junk)])
    assert result.exit_code == 2 and "not a valid capture" in result.stderr


def test_grep_finds_a_match_split_across_writes_only_with_stream(conv):
    plain = runner.invoke(app, ["grep", "HTTP/1.1", str(conv)])
    assert "#0" not in plain.stdout and "#2" in plain.stdout  # the response only
    joined = runner.invoke(app, ["grep", "--stream", "HTTP/1.1", str(conv)])
    assert joined.exit_code == 0
    assert re.search(r"#0\.\.#1 .* @stream 16: ", joined.stdout), joined.stdout


def test_stream_matching_does_not_join_across_a_truncated_capture():
    events = [event(0, b"abc", count=10), event(1, b"def")]
    assert list(iter_stream_matches(events, re.compile(b"cd"))) == []
    events = [event(0, b"abc"), event(1, b"def")]
    (match,) = iter_stream_matches(events, re.compile(b"cd"))
    assert (match.offset, match.first.seq, match.last.seq) == (2, 0, 1)


def test_grep_options(conv):
    def out(*args):
        return runner.invoke(app, ["grep", *args, str(conv)]).stdout

    assert out("-c", "line") == "2\n"
    assert out("-l", "line") == f"{conv}\n"
    assert out("-c", "-i", "LINE") == "2\n"
    assert out("-c", "-F", "l.ne") == "0\n"
    assert out("-c", "-v", "line") == "4\n"
    # The default context is the enclosing line; -C N is N bytes each side of the match.
    assert out("line").splitlines()[0].endswith(': "log line one"...')
    assert out("-C", "2", "line").splitlines()[0].endswith(': ..."g line o"...')
    assert out("-C", "0", "line").splitlines()[0].endswith(': ..."line"...')
    assert "6c 69 6e 65" in out("--hex", "line")
    assert out("-c", "--pid", "20", "GET") == "0\n"


def test_grep_golden_and_escaping(sample):
    result = runner.invoke(app, ["grep", "-C", "4", rb"\x1b|\x00".decode(), str(sample)])
    assert result.exit_code == 0
    check_golden("grep.txt", result.stdout)
    assert no_raw_control_bytes(result.stdout)
    colored = runner.invoke(app, ["grep", "red", str(sample), "--color", "always"]).stdout
    assert "\x1b[1m\x1b[31mred\x1b[0m" in colored and "\\x1b[31m" in colored


def test_grep_several_files_prefix_names(conv, sample):
    result = runner.invoke(app, ["grep", "-c", "e", str(conv), str(sample)])
    assert result.stdout.splitlines() == [f"{conv}:5", f"{sample}:2"]


# ---------------------------------------------------------------- replay


def test_timing_chain():
    events = [event(0, b"a", ts=0), event(1, b"b", ts=2_000), event(2, b"c", ts=10_000)]
    items = list(to_relative_time(events))
    assert [d for d, _ in items] == [0, 2_000, 8_000]
    assert [d for d, _ in cap_relative_time(items, 5_000)] == [0, 2_000, 5_000]
    assert [d for d, _ in adjust_speed(items, 2.0)] == [0, 1_000, 4_000]
    assert [d for d, _ in timed(events, 4.0, 0.000001)] == [0, 250, 250]
    now, slept = [0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += round(seconds * 1e9)

    played = list(paced(timed(events), sleep=sleep, clock=lambda: now[0]))
    assert played == events and slept == [2e-06, 8e-06]


def test_replay_to_the_terminal_keeps_order_and_escapes(sample):
    result = runner.invoke(app, ["replay", str(sample), "--speed", "1000"])
    assert result.exit_code == 0
    assert result.stdout.index("hello") < result.stdout.index("red")
    assert "\\x1b[31mred" in result.stdout and no_raw_control_bytes(result.stdout)


def test_replay_refuses_an_ambiguous_selection_and_lists_the_streams(conv):
    result = runner.invoke(app, ["replay", str(conv), "--to", "-"])
    assert result.exit_code == 2
    assert "2 streams match" in result.stderr
    assert "--pid 10 --fd 3" in result.stderr and "--pid 20 --fd 5" in result.stderr


def test_replay_dry_run_lists_what_would_be_sent(conv):
    result = runner.invoke(app, ["replay", str(conv), "--to", "tcp://127.0.0.1:9",
                                 "--pid", "10", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith('#0 +0.000000s 18 bytes: "GET /index.html HT"')
    assert "would send 3 writes, 48 bytes" in result.stderr


@pytest.mark.parametrize("target", ["tcp://HOST:PORT", "unix:PATH"])
def test_replay_sends_the_stream_to_a_peer_and_shows_the_response(conv, tmp_path, target):
    if target.startswith("tcp"):
        listener = socket.create_server(("127.0.0.1", 0))
        target = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    else:
        path = str(tmp_path / "peer.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen()
        target = f"unix:{path}"
    got = bytearray()

    def serve():
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(65536):
                got.extend(chunk)
                conn.sendall(b"ok\x1b\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    result = runner.invoke(app, ["replay", str(conv), "--to", target, "--fd", "3",
                                 "--show-response", "--wait", "0.5", "--timing",
                                 "--max-gap", "0.01"])
    thread.join(10)
    listener.close()
    assert result.exit_code == 0, result.output
    assert bytes(got) == b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\nGET /second"
    assert "ok\\x1b" in result.stdout and "\x1b" not in result.stdout
    assert "sent 3 writes, 48 bytes" in result.stderr


def test_replay_to_a_file_sends_what_the_peer_got(tmp_path):
    events = [event(0, b"whole"), event(1, b"partial write", ret=7),
              event(2, b"failed", ret=-32), event(3, b"cut", count=9)]
    path = tmp_path / "c.wtrace"
    path.write_bytes(build_capture(events))
    out = tmp_path / "sent.bin"
    result = runner.invoke(app, ["replay", str(path), "--to", f"file:{out}"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"wholepartialcut"
    assert "1 writes were captured truncated" in result.stderr


def test_replay_rejects_targets_it_does_not_know(conv):
    for target in ("http://x", "tcp://nohost", "unix:", "file:"):
        result = runner.invoke(app, ["replay", str(conv), "--to", target])
        assert result.exit_code == 2, target


# ---------------------------------------------------------------- export


def test_export_jsonl_has_one_object_per_record(conv, tmp_path):
    out = tmp_path / "x.jsonl"
    result = runner.invoke(app, ["export", str(conv), "--format", "jsonl", "-o", str(out)])
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in out.read_text().splitlines()]
    assert [o["type"] for o in objects] == ["header", "fd", "write", "write", "read", "fd",
                                            "write", "lost", "write", "write", "end"]
    assert objects[2]["text"] == "GET /index.html HT" and objects[2]["data_b64"]


def test_export_raw_is_the_stream_like_follow_stream(conv, tmp_path):
    out = tmp_path / "x.raw"
    result = runner.invoke(app, ["export", str(conv), "--format", "raw", "--pid", "10", "-o",
                                 str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\nGET /second"
    result = runner.invoke(app, ["export", str(conv), "--format", "raw", "--pid", "10",
                                 "--direction", "in", "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"HTTP/1.1 200 OK\r\n\r\nhello"


def tshark_fields(path, *fields, extra=()):
    if not shutil.which("tshark"):
        pytest.fail("tshark is missing (scripts/bootstrap installs it)")
    args = ["tshark", "-r", str(path), *extra, "-T", "fields"]
    for name in fields:
        args += ["-e", name]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return [line.split("\t") for line in done.stdout.splitlines()]


def test_pcapng_export_opens_in_tshark_with_handshake_gaps_and_comments(tmp_path):
    events = [FdInfo(BASE, 10, 3, FdIdentity("tcp", "10.0.0.1:40000", "10.0.0.2:8080")),
              event(0, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
              event(1, b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100,
                    direction="in", count=65536, ret=5040),
              event(2, b"next", ret=4),
              event(3, b"more", direction="in", count=65536, ret=4)]
    path = tmp_path / "c.wtrace"
    path.write_bytes(build_capture(events))
    out = tmp_path / "c.pcapng"
    result = runner.invoke(app, ["export", str(path), "--format", "pcapng", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = tshark_fields(out, "ip.src", "tcp.srcport", "tcp.flags.str", "tcp.seq", "tcp.len",
                         "tcp.analysis.lost_segment", "frame.comment", "tcp.checksum.status",
                         extra=["-o", "tcp.check_checksum:TRUE"])
    assert [r[2] for r in rows[:3]] == ["··········S·", "·······A··S·", "·······A····"]
    assert rows[3][:5] == ["10.0.0.1", "40000", "·······AP···", "1", "27"]
    assert rows[4][:2] == ["10.0.0.2", "8080"] and rows[4][4] == "141"  # of 5040
    assert rows[5][3] == "28" and rows[5][5] == ""
    assert rows[6][3] == "5041" and rows[6][5] == "1"  # "previous segment not captured"
    assert "pid 10 tid 10 comm app fd 3 (tcp 10.0.0.1:40000 -> 10.0.0.2:8080)" in rows[3][6]
    assert {r[7] for r in rows} == {"1"}  # checksums good


# ---------------------------------------------------------------- scan, redact


def test_scan_finds_the_usual_secrets_and_redact_removes_them(tmp_path):
    path = tmp_path / "s.wtrace"
    path.write_bytes(build_capture([event(0, HTTP), event(1, KEY_AND_CARD)]))
    result = runner.invoke(app, ["scan", str(path)])
    assert result.exit_code == 1
    found = [line.split(": ")[1].split()[0] for line in result.stdout.splitlines()]
    assert found == ["authorization", "bearer-token", "cookie", "password", "card-number",
                     "private-key", "aws-access-key"]  # the second card fails Luhn
    assert "hunter2" not in result.stdout and "abcdefghijklmnop" not in result.stdout
    for keep in ([], ["--keep-length"]):
        out = tmp_path / f"r{len(keep)}.wtrace"
        done = runner.invoke(app, ["redact", str(path), "-o", str(out), "--pattern",
                                   "Host: (\\w+)", *keep])
        assert done.exit_code == 0, done.output
        clean = runner.invoke(app, ["scan", str(out), "--pattern", "Host: (\\w+)"])
        assert clean.exit_code == 0, clean.stdout
        redacted = events_of(out)
        assert b"hunter2" not in redacted[0].data and b"shop" not in redacted[0].data
        assert all(not e.truncated for e in redacted)
        if keep:
            assert [len(e.data) for e in redacted] == [len(HTTP), len(KEY_AND_CARD)]
        notes = dict(read(out)[1].header.provenance[-1].notes)
        assert "authorization" in notes["patterns"] and "pattern-1" in notes["patterns"]
        assert notes["pattern-1"] == "Host: (\\w+)"
        assert all(b"hunter2" not in value.encode() for value in notes.values())


def test_redacted_markers_are_not_findings():
    chosen = rules()
    assert find(b"Authorization: [REDACTED]\r\nCookie: ****\r\npassword=[REDACTED]", chosen) == []


# ---------------------------------------------------------------- merge, recover


def test_merge_interleaves_by_wall_clock_and_keeps_both_headers(tmp_path):
    a = tmp_path / "a.wtrace"
    b = tmp_path / "b.wtrace"
    a.write_bytes(build_capture([event(0, b"a0"), event(2, b"a2")]))
    # b: another machine whose boot clock is 50 s ahead at the same wall time
    b.write_bytes(build_capture([event(1, b"b1", ts=BASE + 50_000_000_000 + 1_000_000)],
                                header=make_header(host="other",
                                                   anchor_boot_ns=BASE + 50_000_000_000)))
    out = tmp_path / "m.wtrace"
    result = runner.invoke(app, ["merge", str(a), str(b), "-o", str(out)])
    assert result.exit_code == 0, result.output
    merged = events_of(out)
    assert [e.data for e in merged] == [b"a0", b"b1", b"a2"]
    assert [e.seq for e in merged] == [0, 1, 2]
    header = read(out)[1].header
    assert [h.host for h in header.provenance[-1].inputs] == ["testhost", "other"]
    assert header.wall_ns(merged[1].ts_ns) == make_header().wall_ns(BASE + 1_000_000)


def test_recover_salvages_a_cut_capture_and_closes_it(tmp_path):
    events = [event(i, b"%06d" % i * 40) for i in range(3000)]
    data = build_capture(events, index=False)
    cut = tmp_path / "cut.wtrace"
    cut.write_bytes(data[:len(data) * 2 // 3])
    out = tmp_path / "r.wtrace"
    result = runner.invoke(app, ["recover", str(cut), "-o", str(out)])
    assert result.exit_code == 0, result.output
    records, reader = read(out)
    got = [r for r in records if isinstance(r, IoEvent)]
    assert got == events[:len(got)] and len(got) >= 1024
    assert reader.end is not None and not reader.truncated
    with open(out, "rb") as f:
        assert read_index(f)[0] is not None
    assert "cut inside the frame" in result.stderr
    assert read(out)[1].header.provenance[-1].op == "recover"


def test_recover_drops_a_damaged_frame_and_keeps_the_rest(tmp_path):
    events = [event(i, b"%06d" % i * 40) for i in range(3000)]
    data = bytearray(build_capture(events, index=False))
    frames = [m.start() for m in re.finditer(re.escape(b"\x28\xb5\x2f\xfd"), data)]
    data[frames[2] + 200] ^= 0xFF  # inside the second frame of events
    path = tmp_path / "d.wtrace"
    path.write_bytes(bytes(data))
    assert runner.invoke(app, ["show", str(path)]).exit_code == 10
    out = tmp_path / "r.wtrace"
    result = runner.invoke(app, ["recover", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    got = events_of(out)
    assert got == events[:1024] + events[2048:]
    assert "its records are dropped" in result.stderr


# ---------------------------------------------------------------- hostile input, everywhere

COMMANDS = [
    ["info", "{f}"], ["info", "--json", "{f}"], ["filter", "{f}", "-o", "{o}"],
    ["grep", "x", "{f}"], ["replay", "{f}", "--speed", "1000"], ["replay", "{f}", "--to", "-"],
    ["export", "{f}", "--format", "jsonl", "-o", "{o}"],
    ["export", "{f}", "--format", "pcapng", "-o", "{o}"],
    ["export", "{f}", "--format", "raw", "-o", "{o}"], ["scan", "{f}"],
    ["redact", "{f}", "-o", "{o}"], ["merge", "{f}", "{f}", "-o", "{o}"],
    ["recover", "{f}", "-o", "{o}"],
]


def hostile_inputs() -> dict[str, bytes]:
    good = build_capture(conversation())
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x40
    absurd = bytearray(good)
    second = absurd.index(b"\x28\xb5\x2f\xfd", 20)
    absurd[second + 4] = 0xC0 | (absurd[second + 4] & 0x3F)
    return {"empty": b"", "text": b"hello, not a capture\n" * 10, "cut": good[:len(good) // 2],
            "flipped": bytes(flipped), "absurd-size": bytes(absurd) + b"\xff" * 8,
            "random": random.Random(8).randbytes(4096)}  # seeded: a failure reproduces


@pytest.mark.parametrize("name", list(hostile_inputs()))
def test_every_command_meets_hostile_input_with_one_line_or_a_warning(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(hostile_inputs()[name])
    broken = []  # every command is tried, so one run names all that break the rule
    for template in COMMANDS:
        out = tmp_path / "out"
        if out.exists():
            out.unlink()
        args = [a.format(f=path, o=out) for a in template]
        done = subprocess.run(wtrec_cmd(*args), capture_output=True, text=True, timeout=60,
                              check=False)
        problems = []
        if "Traceback" in done.stderr or "internal error" in done.stderr:
            problems.append("a traceback or internal error")
        if done.returncode not in (0, 1, 2, 9, 10):
            problems.append(f"exit {done.returncode}")
        # An error is exactly one `wtrec:` line; success may carry warnings.
        if done.returncode not in (0, 1) and (len(done.stderr.splitlines()) != 1
                                              or not done.stderr.startswith("wtrec: ")):
            problems.append(f"exit {done.returncode} with {len(done.stderr.splitlines())} "
                            "stderr lines, not one wtrec: line")
        if not no_raw_control_bytes(done.stdout):
            problems.append("raw control bytes on stdout")
        if problems:
            broken.append((template[:3], problems, done.stderr))
    assert not broken, broken


def test_a_derived_header_reads_back_with_its_provenance(conv, tmp_path):
    out = tmp_path / "f.wtrace"
    result = runner.invoke(app, ["filter", str(conv), "-o", str(out), "--pid", "10"])
    assert result.exit_code == 0, result.output
    out2 = tmp_path / "g.wtrace"
    result = runner.invoke(app, ["redact", str(out), "-o", str(out2)])
    assert result.exit_code == 0, result.output
    header: Header = read(out2)[1].header
    assert [s.op for s in header.provenance] == ["filter", "redact"]
    assert all(not i.provenance for s in header.provenance for i in s.inputs)
    info = runner.invoke(app, ["info", str(out2)])
    assert info.exit_code == 0, info.output
    assert info.stdout.count("derived     ") == 2


def test_the_accumulator_adds_up_per_fd_identity_process_and_direction():
    from wtrec.wtrace.stats import StatsAccumulator

    records = [FdInfo(BASE, 10, 3, FdIdentity("tcp", "1.1.1.1:1", "2.2.2.2:2")),
               event(0, b"abc"), event(1, b"xy", direction="in", count=100),
               FdInfo(BASE, 10, 3, FdIdentity("pipe")),  # closed and reused
               event(2, b"defg", count=9), event(3, b"z", ret=-9)]
    accumulator = StatsAccumulator()
    assert accumulator.add_batch(records) == (4, BASE, BASE + 3_000_000)
    stats = accumulator.snapshot()
    assert (stats.all.events, stats.all.captured, stats.all.expected, stats.all.truncated,
            stats.all.failed, stats.records) == (4, 10, 15, 1, 1, 6)
    tcp, pipe = stats.fds.values()
    assert (tcp.identity.kind, tcp.out.events, tcp.into.events, tcp.into.captured) == (
        "tcp", 1, 1, 2)
    assert (pipe.identity.kind, pipe.out.events, pipe.out.captured) == ("pipe", 2, 5)
    proc = stats.processes[10]
    assert (proc.out.events, proc.into.events, proc.first_ns, proc.last_ns) == (
        3, 1, BASE, BASE + 3_000_000)


# ---------------------------------------------------------------- built on the Python API

STDIN_COMMANDS = [
    ["export", "--format", "jsonl", "-o", "-"],
    ["export", "--format", "pcapng", "-o", "-"],
    ["filter", "-o", "-", "--pid", "20"],
    ["redact", "-o", "-"],
    ["scan"],
    ["streams", "--all"],
    ["messages"],
    ["show"],
    ["show", "--json"],
    ["grep", "-c", "e", "FILE"],
    ["grep", "--stream", "e", "FILE"],
    ["info", "--json"],
    ["export", "--format", "raw", "-o", "-", "--pid", "20", "--fd", "5"],
    ["replay", "--dry-run", "--pid", "10", "--fd", "3"],
]


@pytest.mark.parametrize("command", STDIN_COMMANDS, ids=lambda c: " ".join(c[:3]))
def test_commands_read_stdin_through_the_python_api(conv, monkeypatch, command):
    import wtrec.api

    opened = []
    real_open = wtrec.api.open

    def spy(source, **options):
        capture = real_open(source, **options)
        opened.append(capture)
        return capture

    def arguments(name: str) -> list[str]:  # the input after the command, or where FILE is
        if "FILE" in command:
            return [name if part == "FILE" else part for part in command]
        return [command[0], name, *command[1:]]

    monkeypatch.setattr(wtrec.api, "open", spy)
    from_path = runner.invoke(app, arguments(str(conv)))
    assert from_path.exit_code in (0, 1), from_path.output
    assert len(opened) == 1
    from_stdin = runner.invoke(app, arguments("-"), input=conv.read_bytes())
    assert from_stdin.exit_code == from_path.exit_code, from_stdin.output
    assert len(opened) == 2  # the API read all of stdin, as it read the file
    if command[0] != "info":  # info reads the file's index, and a pipe's records
        assert opened[1].event_count == opened[0].event_count == len(
            [r for r in conversation() if isinstance(r, IoEvent)])
    if command[0] == "info":  # the name and size differ
        by_path, by_pipe = json.loads(from_path.stdout), json.loads(from_stdin.stdout)
        for key in ("events", "lost", "processes", "fds"):
            assert by_path[key] == by_pipe[key]
    elif command[0] in ("filter", "redact"):  # their headers record the command line
        assert from_stdin.stdout_bytes[:4] == from_path.stdout_bytes[:4]
    else:
        assert from_stdin.stdout_bytes == from_path.stdout_bytes


@pytest.mark.parametrize("command", [["export", "--format", "jsonl", "-o", "-"], ["messages"],
                                     ["scan"]], ids=lambda c: c[0])
def test_a_pipe_on_stdin_gives_what_the_file_gives(conv, command):
    by_path = subprocess.run(wtrec_cmd(command[0], str(conv), *command[1:]), capture_output=True,
                             check=False)
    piped = subprocess.run(wtrec_cmd(command[0], "-", *command[1:]), input=conv.read_bytes(),
                           capture_output=True, check=False)
    assert piped.returncode == by_path.returncode, piped.stderr
    assert piped.stdout == by_path.stdout
