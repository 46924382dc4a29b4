"""Crafted captures against the offline commands: bounded memory, escaped text, clean errors.

Each test makes its own hostile file (a few KiB that expand to millions of
objects or lines, text fields full of terminal escapes, numbers at the
edges of their ranges) and runs the real commands on it. Memory is the
child's peak RSS (ru_maxrss from wait4), compared with a bound far below
what the unbounded code used; nothing here times anything.
"""

import dataclasses
import os
import stat
import struct
import subprocess
import sys
import tempfile

import msgpack
import pytest
import zstandard
from conftest import build_capture, make_header, wtrec_cmd
from typer.testing import CliRunner

from wtrec.cli.app import app
from wtrec.format import encode_preamble
from wtrec.records import Derivation, End, FdIdentity, FdInfo, Filters, IoEvent, Lost
from wtrec.replay import paced, timed
from wtrec.wtrace.codec import encode_record

runner = CliRunner()
BASE = 1_000_000_000
U64 = (1 << 64) - 1
MiB = 1 << 20


def frame(content: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19, write_content_size=True,
                                    write_checksum=True).compress(content)


def crafted(*contents: bytes, header=None) -> bytes:
    """A capture: preamble, a header frame, then one frame per raw msgpack content."""
    head = msgpack.packb(encode_record(header or make_header(format_minor=2)), use_bin_type=True)
    return encode_preamble() + frame(head) + b"".join(frame(c) for c in contents)


def packed(*records) -> bytes:
    return b"".join(msgpack.packb(encode_record(r), use_bin_type=True) for r in records)


# Forked from a small Python rather than from pytest: a child's peak RSS
# counts what it inherited before exec, and pytest is big.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], cwd=None) -> tuple[int, bytes, bytes, int]:
    """(exit code, stdout, stderr, peak RSS in MiB) of one wtrec run."""
    with tempfile.NamedTemporaryFile() as peak:
        done = subprocess.run([sys.executable, "-c", _MEASURE, peak.name, *wtrec_cmd(*args)],
                              capture_output=True, stdin=subprocess.DEVNULL, cwd=cwd)
        return done.returncode, done.stdout, done.stderr, int(peak.read() or 0) // 1024


def event(i, data, syscall="write", pid=10, fd=3, comm=b"app", **changes):
    return dataclasses.replace(
        IoEvent(BASE + i, pid, pid, 1000, comm, fd, len(data), data, syscall=syscall,
                ret=len(data), seq=i), **changes)


# ------------------------------------------------------------------ memory


def nested_empty_arrays(outer: int, inner: int) -> bytes:
    """One record of an unknown type (99) holding outer x inner empty arrays."""
    one = b"\xdc" + struct.pack(">H", inner) + b"\x90" * inner
    return b"\x92\x63" + b"\xdc" + struct.pack(">H", outer) + one * outer


@pytest.mark.parametrize("command", [
    ["show", "F"], ["info", "F"], ["grep", "x", "F"], ["scan", "F"],
    ["export", "F", "--format", "jsonl", "-o", "-"],
    ["filter", "F", "-o", "out.wtrace"], ["recover", "F", "-o", "out.wtrace"]])
def test_a_record_of_millions_of_empty_arrays_costs_little_memory(tmp_path, command):
    """Issue 10: 1.7 KB holding 16.7M empty arrays made every command use 1.22 GB."""
    path = tmp_path / "arrays.wtrace"
    path.write_bytes(crafted(nested_empty_arrays(4096, 4096)))
    assert path.stat().st_size < 8192
    code, _out, err, peak = run_measured([str(path) if a == "F" else a for a in command],
                                         cwd=tmp_path)
    assert code != 70, err
    if command[0] != "recover":
        assert code in (2, 10) and b"more than" in err and b"msgpack objects" in err
    assert peak < 200, f"{command}: {peak} MiB"


def test_show_of_an_event_of_newlines_streams_in_little_memory(tmp_path):
    """Issue 10: a few KiB (one event of newlines) made show use 3.68 GB."""
    path = tmp_path / "newlines.wtrace"
    data = b"\n\x1b" * (2 * MiB)
    path.write_bytes(crafted(packed(event(0, data))))
    assert path.stat().st_size < 8192
    for view in ([], ["--hex"]):
        code, out, err, peak = run_measured(["show", str(path), *view])
        assert code == 0, err
        assert out.count(b"\n") > MiB // 16 and b"\x1b" not in out
        assert peak < 120, f"show {view}: {peak} MiB"


def test_show_of_one_huge_event_holds_about_the_event(tmp_path):
    """Issue 10: one 60 MiB event made show hit MemoryError (exit 70)."""
    path = tmp_path / "huge.wtrace"
    data = b"\x1b" * (24 * MiB)
    path.write_bytes(crafted(packed(event(0, data))))
    code, out, err, peak = run_measured(["show", str(path)])
    assert code == 0, err
    assert out.count(b"\\x1b") == 24 * MiB and b"\x1b" not in out
    # The frame's content, msgpack's copy and the payload: about three times
    # the event (the unbounded rendering took 3.5 GB).
    assert peak < 4 * 24 + 60, f"{peak} MiB"


def test_recover_of_zstd_magic_bytes_summarises(tmp_path):
    """Issue 10: 20 MiB of zstd magic bytes took 44.6 s, 1.54 GB, 10.5M lines on stderr."""
    path = tmp_path / "magic.bin"
    path.write_bytes(struct.pack("<I", 0xFD2FB528) * (4 * MiB // 4))
    code, _out, err, peak = run_measured(["recover", str(path), "-o", str(tmp_path / "r")])
    assert code == 10 and err.count(b"\n") == 1, err[:2000]
    assert b"nothing in it could be recovered" in err
    assert peak < 100


def test_recover_lists_the_first_problems_and_counts_the_rest(tmp_path):
    good = build_capture()
    damaged = bytearray()
    for _ in range(50):  # fifty damaged frames, each a problem of its own
        broken = bytearray(frame(packed(event(0, b"x" * 200))))
        broken[-6] ^= 0xFF  # the checksum no longer matches
        damaged += broken + b"\0\0\0\0"
    path = tmp_path / "damaged.wtrace"
    path.write_bytes(good[:-200] + bytes(damaged))
    result = runner.invoke(app, ["recover", str(path), "-o", str(tmp_path / "r.wtrace")])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") < 30
    assert "more problems (only the first are listed)" in result.stderr


# ------------------------------------------------------- escapes everywhere

ESC = "\x1b[2J\x07"


def escaped_capture() -> bytes:
    """Every text field a capture holds carries a terminal escape."""
    inner = make_header(tool_version="0.1" + ESC, host="h" + ESC, kernel="k" + ESC,
                        argv=("wtrec" + ESC,), buffer="ringbuf" + ESC,
                        filters=Filters(comms=("c" + ESC,), syscalls=("write" + ESC,),
                                        command=("cmd" + ESC,)))
    step = Derivation(op="filter" + ESC, tool_version="v" + ESC, time_ns=BASE,
                      argv=("wtrec" + ESC,), notes=(("note" + ESC, "value" + ESC),),
                      inputs=(inner,))
    header = dataclasses.replace(inner, format_minor=2, provenance=(step,))
    identity = FdIdentity("tcp" + ESC, "127.0.0.1:1" + ESC, "127.0.0.1:2" + ESC, "/p" + ESC)
    records = [
        FdInfo(BASE, 10, 3, identity),
        event(1, b"secret password=hunter2 \x1b[31m", syscall="write" + ESC,
              comm=b"app\x1b[2J"),
        Lost(BASE + 2, 3, "ringbuf" + ESC),
        event(3, b"other", syscall="sendto" + ESC, comm=b"app\x1b[2J"),
    ]
    return build_capture(records, header=header)


def raw_controls(text: str) -> list[str]:
    return sorted({c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0})


@pytest.mark.parametrize("command", [
    ["show", "F"], ["show", "F", "--hex"], ["show", "F", "--json"], ["info", "F"],
    ["info", "F", "--json"], ["grep", "secret", "F"], ["grep", "-v", "secret", "F"],
    ["grep", "--stream", "secret", "F"], ["grep", "--hex", "secret", "F"],
    ["grep", "-C", "3", "secret", "F"], ["scan", "F"], ["replay", "F", "--speed", "1000000"],
    ["replay", "F", "--dry-run", "--fd", "3"], ["export", "F", "--format", "jsonl", "-o", "-"]])
def test_every_text_field_of_a_capture_reaches_the_terminal_escaped(tmp_path, command):
    """Issue 10: raw ESC bytes came from syscall (show, --hex, grep, grep -v, scan) and lost source."""
    path = tmp_path / "escapes.wtrace"
    path.write_bytes(escaped_capture())
    result = runner.invoke(app, [str(path) if a == "F" else a for a in command])
    assert result.exit_code in (0, 1), result.output
    assert not raw_controls(result.stdout), command
    assert not raw_controls(result.stderr), command
    assert result.stdout.strip()


@pytest.mark.parametrize("command", [["filter", "--pid", "10"], ["redact"], ["recover"]])
def test_derived_captures_keep_escaping_their_notes(tmp_path, command):
    path = tmp_path / "escapes.wtrace"
    path.write_bytes(escaped_capture())
    out = tmp_path / "derived.wtrace"
    made = runner.invoke(app, [*command[:1], str(path), "-o", str(out), *command[1:]])
    assert made.exit_code == 0, made.output
    assert not raw_controls(made.stderr)
    for view in (["info"], ["show"]):
        result = runner.invoke(app, [*view, str(out)])
        assert result.exit_code == 0 and not raw_controls(result.stdout), result.output


def test_pcapng_comments_escape_the_syscall(tmp_path):
    path = tmp_path / "escapes.wtrace"
    path.write_bytes(escaped_capture())
    out = tmp_path / "x.pcapng"
    assert runner.invoke(app, ["export", str(path), "--format", "pcapng", "-o", str(out)]).exit_code == 0
    assert b"\x1b" not in out.read_bytes().replace(b"\x1b[31m", b"")  # the payload's own ESC stays


# -------------------------------------------------- clean errors, not exit 70


def pcapng_blocks(data: bytes) -> list[tuple[int, int]]:
    """(type, length) of each block, checking each length is repeated at its end."""
    blocks, position = [], 0
    while position < len(data):
        kind, length = struct.unpack_from("<II", data, position)
        assert struct.unpack_from("<I", data, position + length - 4)[0] == length
        blocks.append((kind, length))
        position += length
    assert position == len(data)
    return blocks


def test_pcapng_export_of_a_comment_over_64_kib_is_cut(tmp_path):
    path = tmp_path / "long.wtrace"
    path.write_bytes(build_capture([FdInfo(BASE, 10, 3, FdIdentity("file", path="/p" * 40_000)),
                                    event(1, b"data")]))
    out = tmp_path / "x.pcapng"
    result = runner.invoke(app, ["export", str(path), "--format", "pcapng", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert all(length < 8192 for _kind, length in pcapng_blocks(out.read_bytes()))


def test_pcapng_export_of_a_port_above_65535_makes_up_addresses(tmp_path):
    path = tmp_path / "port.wtrace"
    path.write_bytes(build_capture([
        FdInfo(BASE, 10, 3, FdIdentity("tcp", "127.0.0.1:99999", "127.0.0.1:70000")),
        event(1, b"data")]))
    out = tmp_path / "x.pcapng"
    result = runner.invoke(app, ["export", str(path), "--format", "pcapng", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert bytes([10, 1, 0, 10]) in out.read_bytes()  # 10.1.x.y: the made-up local address


def test_pcapng_export_of_a_wall_time_past_2_64_ns_is_a_format_error(tmp_path):
    path = tmp_path / "late.wtrace"
    path.write_bytes(build_capture([event(1, b"data")],
                                   header=make_header(anchor_real_ns=U64, anchor_boot_ns=0)))
    result = runner.invoke(app, ["export", str(path), "--format", "pcapng",
                                 "-o", str(tmp_path / "x.pcapng")])
    assert result.exit_code == 10 and "64-bit timestamp" in result.stderr
    assert not (tmp_path / "x.pcapng").exists()


def test_merge_whose_retimed_times_pass_2_64_is_a_format_error(tmp_path):
    first, second = tmp_path / "a.wtrace", tmp_path / "b.wtrace"
    first.write_bytes(build_capture([event(1, b"a")]))
    second.write_bytes(build_capture(
        [event(2, b"b", ts_ns=U64 - 10)],
        header=make_header(anchor_real_ns=make_header().anchor_real_ns + 10**18)))
    result = runner.invoke(app, ["merge", str(first), str(second), "-o", str(tmp_path / "m")])
    assert result.exit_code == 10 and "passes 2^64" in result.stderr, result.output


@pytest.mark.parametrize("command", [["filter"], ["redact"], ["merge"], ["recover"]])
def test_totals_of_two_events_of_count_2_64_minus_1_do_not_overflow(tmp_path, command):
    """Issue 10: the index's totals overflowed msgpack's 64 bits (exit 70)."""
    path = tmp_path / "counts.wtrace"
    records = [event(1, b"a", count=U64, ret=None), event(2, b"b", count=U64, ret=None),
               Lost(BASE + 3, U64, "ringbuf"), Lost(BASE + 4, U64, "ringbuf")]
    path.write_bytes(crafted(packed(*records)))
    inputs = [str(path), str(path)] if command == ["merge"] else [str(path)]
    out = tmp_path / "out.wtrace"
    result = runner.invoke(app, [*command, *inputs, "-o", str(out)])
    assert result.exit_code == 0, result.output
    shown = runner.invoke(app, ["info", "--json", str(out)])
    assert shown.exit_code == 0, shown.output
    events = 4 if command == ["merge"] else 2
    assert f'"events": {{"events": {events},' in shown.stdout


def test_replay_waits_out_a_gap_of_2_63_ns_in_pieces():
    """Issue 10: one sleep of 2^63 ns failed (EINVAL, exit 70)."""
    events = [event(0, b"a", ts_ns=0), event(1, b"b", ts_ns=1 << 63)]
    now, slept = [0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += round(seconds * 1e9)

    assert list(paced(timed(events), sleep=sleep, clock=lambda: now[0])) == events
    assert max(slept) <= 86400 and now[0] >= 1 << 63
    assert [d for d, _ in timed(events, 1.0, float("inf"))] == [0, 1 << 63]


@pytest.mark.parametrize("option", [["--speed", "nan"], ["--max-gap", "nan"]])
def test_replay_refuses_speeds_and_gaps_that_are_not_numbers(tmp_path, option):
    path = tmp_path / "c.wtrace"
    path.write_bytes(build_capture())
    result = runner.invoke(app, ["replay", str(path), *option])
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_filter_since_a_time_that_is_not_finite_is_a_usage_error(tmp_path, value):
    path = tmp_path / "c.wtrace"
    path.write_bytes(build_capture())
    result = runner.invoke(app, ["filter", str(path), "-o", str(tmp_path / "o"),
                                 "--since", value])
    assert result.exit_code == 2 and "finite" in result.stderr, result.output


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_force_output_onto_a_device_writes_into_it_and_reports_a_full_one(tmp_path):
    """Issue 10: --force -o onto a /dev/full copy ended in exit 70 (the close error)."""
    source = tmp_path / "c.wtrace"
    source.write_bytes(build_capture())
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    for command in (["filter"], ["export", "--format", "jsonl"], ["redact"]):
        result = subprocess.run(wtrec_cmd(command[0], str(source), *command[1:], "-o", str(full),
                                          "--force"), capture_output=True, text=True)
        assert result.returncode == 7 and "No space left" in result.stderr, result.stderr
        assert stat.S_ISCHR(full.lstat().st_mode)  # written into, never replaced


def test_a_fifo_nobody_reads_is_an_output_error_not_a_hang(tmp_path):
    source = tmp_path / "c.wtrace"
    source.write_bytes(build_capture())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = subprocess.run(wtrec_cmd("filter", str(source), "-o", str(fifo), "--force"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 7 and "nothing reads" in result.stderr


@pytest.mark.parametrize("command", [["show", "F"], ["info", "F"], ["grep", "hello", "F"],
                                     ["export", "F", "--format", "jsonl", "-o", "-"]])
def test_stdout_on_a_full_device_is_an_output_error(tmp_path, command):
    source = tmp_path / "c.wtrace"
    source.write_bytes(build_capture())
    with open("/dev/full", "wb") as full:
        result = subprocess.run(wtrec_cmd(*(str(source) if a == "F" else a for a in command)),
                                stdout=full,
                                stderr=subprocess.PIPE, text=True)
    assert result.returncode in (7, 2) and "No space left" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Exception ignored" not in result.stderr


def test_end_record_of_a_derived_capture_saturates_its_totals(tmp_path):
    path = tmp_path / "counts.wtrace"
    path.write_bytes(crafted(packed(Lost(BASE, U64, "ringbuf"), Lost(BASE + 1, U64, "ringbuf"),
                                    End(BASE + 2, 0, 0, U64))))
    out = tmp_path / "f.wtrace"
    assert runner.invoke(app, ["filter", str(path), "-o", str(out)]).exit_code == 0
    shown = runner.invoke(app, ["info", "--json", str(out)])
    assert f'"lost": {2 * U64}' in shown.stdout or f'"lost": {U64}' in shown.stdout


@pytest.mark.parametrize("command", [["export", "F", "--format", "jsonl", "-o", "-"],
                                     ["filter", "F", "-o", "-"], ["show", "F"]])
def test_a_reader_that_goes_away_is_not_an_error(tmp_path, command):
    """| head: a broken pipe ends the command quietly (exit 0), unlike a full device."""
    source = tmp_path / "c.wtrace"
    source.write_bytes(build_capture([event(i, b"x" * 1000) for i in range(3000)]))
    child = subprocess.Popen(wtrec_cmd(*(str(source) if a == "F" else a for a in command)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.read(10)
    child.stdout.close()
    _out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
