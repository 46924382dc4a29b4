"""The Python API (wtrec.open) against the command line's own view of the same captures."""

import base64
import io
import json
import os
import subprocess
import sys
import tracemalloc
import warnings

import pytest
from conftest import DATA, build_capture, make_header, sample_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import wtrec
from wtrec.cli.app import app
from wtrec.errors import (
    FormatError,
    InputError,
    MissingExtraError,
    NewerFormatError,
    UsageError,
    WtrecError,
)
from wtrec.format import CaptureWriter
from wtrec.records import End, FdIdentity, FdInfo, Header, IoEvent, Lost

runner = CliRunner()
V10 = DATA / "v1.0-client.wtrace"


@pytest.fixture
def sample_path(tmp_path):
    path = tmp_path / "sample.wtrace"
    path.write_bytes(build_capture())
    return path


def show_json(path, *options: str) -> list[dict]:
    result = runner.invoke(app, ["show", "--json", str(path), *options])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def as_show_json(event: wtrec.Event) -> dict:
    """What `show --json` prints for an event, rebuilt from the API's Event."""
    obj = {"type": "write" if event.direction == "out" else "read", "ts_ns": event.ts_ns,
           "wall_ns": event.wall_ns, "seq": event.seq, "pid": event.pid, "tid": event.tid,
           "uid": event.uid, "comm": event.comm, "fd": event.fd, "syscall": event.syscall,
           "direction": event.direction, "count": event.count, "ret": event.ret,
           "captured": len(event.data), "truncated": event.truncated,
           "data_b64": base64.b64encode(event.data).decode()}
    if event.identity is not None:
        obj["fd_desc"] = event.identity.describe()
    try:
        obj["text"] = event.data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return obj


@pytest.mark.parametrize("name", ["v1.0", "sample"])
def test_events_are_what_show_json_prints(name, sample_path):
    path = V10 if name == "v1.0" else sample_path
    with wtrec.open(path) as cap:
        events = list(cap.events())
    shown = [obj for obj in show_json(path) if obj["type"] in ("write", "read")]
    assert len(events) == len(shown) > 0
    assert [as_show_json(e) for e in events] == shown


def test_sample_events_carry_their_identity_and_header_facts(sample_path):
    cap = wtrec.open(sample_path)
    first, _, tty, unix = cap.events()
    assert first.identity == FdIdentity("tcp", "127.0.0.1:52144", "127.0.0.1:11111")
    assert tty.identity == FdIdentity("tty", path="/dev/pts/0") and tty.failed
    assert unix.comm == "\x1bevil" and unix.direction == "in" and unix.truncated is False
    assert first.host == "testhost" and first.capture_start_ns == cap.header.start_ns
    assert first.time.year == 2023 and first.wall_ns == cap.header.wall_ns(first.ts_ns)
    with pytest.raises(AttributeError):
        first.pid = 1  # read-only


@pytest.mark.parametrize(("filters", "options"), [
    ({"pid": 4242}, ["--pid", "4242"]),
    ({"pid": 4243}, ["--pid", "4243"]),  # a tid matches too
    ({"comm": "client-tcp"}, ["--comm", "client-tcp"]),
    ({"fd": [1, 5]}, ["--fd", "1", "--fd", "5"]),
    ({"comm": ("nobody",)}, ["--comm", "nobody"]),
])
def test_filters_select_what_the_cli_selects(sample_path, filters, options):
    events = list(wtrec.open(sample_path).events(**filters))
    shown = [o for o in show_json(sample_path, *options) if o["type"] in ("write", "read")]
    assert [as_show_json(e) for e in events] == shown


def test_direction_and_syscall_filters(sample_path):
    cap = wtrec.open(sample_path)
    assert [e.seq for e in cap.events(direction="in")] == [3]
    assert [e.seq for e in cap.events(direction="out")] == [0, 1, 2]
    assert [e.seq for e in cap.events(syscall=["writev", "recvfrom"])] == [1, 3]
    with pytest.raises(UsageError, match="direction"):
        cap.events(direction="sideways")
    with pytest.raises(UsageError, match="pid takes int"):
        cap.events(pid="4242")


def test_records_yield_every_record_type(sample_path):
    records = list(wtrec.open(sample_path).records())
    assert isinstance(records[0], Header)
    assert records[1:-1] == sample_records()
    assert isinstance(records[-1], End)
    assert {type(r) for r in records} == {Header, FdInfo, IoEvent, Lost, End}


def test_file_objects_seekable_or_not(sample_path):
    data = sample_path.read_bytes()
    cap = wtrec.open(io.BytesIO(data))
    assert len(list(cap.events())) == len(list(cap.events())) == 4  # seeks back for a 2nd pass

    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as w:
        w.write(data)
    with os.fdopen(read_end, "rb") as pipe:
        once = wtrec.open(pipe)
        assert once.header.host == "testhost"
        assert len(list(once.records())) == len(sample_records()) + 2
        with pytest.raises(UsageError, match="read once"):
            list(once.records())


def test_a_list_of_paths_is_read_as_one_series(tmp_path):
    paths = []
    for n, host in enumerate(("alpha", "beta")):
        path = tmp_path / f"part{n}.wtrace"
        path.write_bytes(build_capture(header=make_header(host=host)))
        paths.append(path)
    cap = wtrec.open([str(p) for p in paths])
    assert [h.host for h in cap.headers] == ["alpha", "beta"] and cap.header.host == "alpha"
    events = list(cap.events())
    assert [e.host for e in events] == ["alpha"] * 4 + ["beta"] * 4
    # each file names its own descriptors
    assert events[4].identity == FdIdentity("tcp", "127.0.0.1:52144", "127.0.0.1:11111")
    assert sum(isinstance(r, Header) for r in cap.records()) == 2


def test_paths_are_closed_after_each_pass(sample_path):
    cap = wtrec.open(sample_path)
    before = set(os.listdir("/proc/self/fd"))
    list(cap.events())
    partial = cap.events()
    next(partial)
    assert len(set(os.listdir("/proc/self/fd")) - before) == 1  # only the unfinished pass
    cap.close()
    assert set(os.listdir("/proc/self/fd")) - before == set()


def test_truncated_capture_warns_and_yields_its_whole_records(sample_path):
    cut = sample_path.with_name("cut.wtrace")
    cut.write_bytes(build_capture(end=False))
    cap = wtrec.open(cut)
    with pytest.warns(wtrec.TruncatedCaptureWarning, match="ends early"):
        assert len(list(cap.events())) == 4
    assert "ends early" in cap.warning


def test_errors_are_wtrecs_own(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        wtrec.open(tmp_path / "missing.wtrace")
    with pytest.raises(InputError, match="directory"):
        wtrec.open(tmp_path)
    (tmp_path / "junk").write_bytes(b"GET / HTTP/1.1\r\n" * 10)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(FormatError) as caught:
        wtrec.open(tmp_path / "junk")
    # closed at once, not when the traceback (held here) lets the file object go
    assert set(os.listdir("/proc/self/fd")) - before == set(), caught
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(FormatError):
        wtrec.open(tmp_path / "empty")
    newer = tmp_path / "newer.wtrace"
    newer.write_bytes(build_capture(header=make_header(format_major=2)))
    with pytest.raises(NewerFormatError):
        wtrec.open(newer)
    with pytest.raises(UsageError, match="takes a path"):
        wtrec.open(42)  # type: ignore[arg-type]


def read_all(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wtrec.TruncatedCaptureWarning)
        cap = wtrec.open(io.BytesIO(data))
        list(cap.records())
        list(cap.events())


def test_a_capture_cut_anywhere_gives_only_format_errors_or_a_warning():
    data = build_capture()
    for size in range(len(data)):
        try:
            read_all(data[:size])
        except FormatError:
            pass


def test_flipped_bytes_give_only_format_errors():
    data = build_capture()
    for offset in range(0, len(data), 3):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        try:
            read_all(bytes(damaged))
        except (FormatError, NewerFormatError):
            pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_give_only_wtrec_errors(data):
    try:
        read_all(build_capture()[:24] + data)
    except WtrecError:
        pass


def test_events_stream_rather_than_load_the_file(tmp_path):
    """100 MB of payload goes through in the memory of a few frames (each at most ~1 MiB).

    The reader holds the frames being decompressed ahead (reader.FRAMES_AHEAD)
    and the one being decoded, with its decoded copy: about 7 MiB, whatever
    the file's size.
    """
    path = tmp_path / "big.wtrace"
    payload = b"0123456789abcdef" * 256  # 4 KiB
    with open(path, "wb") as out:
        writer = CaptureWriter(out, make_header(format_minor=2))
        for i in range(25_000):
            writer.write(IoEvent(1_000_000_000 + i, 7, 7, 0, b"big", 3, len(payload), payload,
                                 ret=len(payload), seq=i))
        writer.close(End(2_000_000_000, 25_000, 25_000 * len(payload), 0))
    cap = wtrec.open(path)
    tracemalloc.start()
    try:
        total = sum(len(e.data) for e in cap.events())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 25_000 * len(payload)
    assert peak < 12 << 20, f"peak {peak} bytes while reading {total}"


def test_to_arrow_and_to_pandas_match_the_events(sample_path):
    cap = wtrec.open(sample_path)
    table = cap.to_arrow()
    events = list(cap.events())
    assert table.num_rows == 4
    assert table.column("data").to_pylist() == [e.data for e in events]
    assert table.column("seq").to_pylist() == [0, 1, 2, 3]
    assert table.column("remote_port").to_pylist() == [11111, 11111, None, None]
    assert table.column("fd_path").to_pylist() == [None, None, "/dev/pts/0", "/run/\x1b.sock"]
    assert json.loads(table.schema.metadata[b"wtrec.header"])["host"] == "testhost"
    frame = cap.to_pandas(direction="out")
    assert list(frame["seq"]) == [0, 1, 2] and list(frame["comm"].unique()) == ["client-tcp"]


def test_without_the_extras_the_error_names_them(sample_path, monkeypatch):
    cap = wtrec.open(sample_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'wtrec\[pandas\]'"):
        cap.to_pandas()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'wtrec\[parquet\]'") as caught:
        cap.to_arrow()
    assert isinstance(caught.value, ImportError) and caught.value.exit_code == 12


def test_importing_wtrec_loads_neither_the_cli_nor_bcc_nor_pyarrow():
    script = ("import sys, wtrec; print(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'typer', 'click', 'rich', 'bcc', 'pyarrow', 'pandas'}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_a_pipe_is_read_once_by_the_reader_that_read_its_header(sample_path):
    """What the command line relies on for stdin: one pass, its facts, no Python warning."""
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as w:
        w.write(build_capture(end=False))
    with os.fdopen(read_end, "rb") as pipe:
        cap = wtrec.open(pipe, warn=False)
        assert cap.header.host == "testhost"
        assert (cap.event_count, cap.end, cap.truncated, cap.warning) == (0, None, False, None)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warn=False: the caller says it its own way
            records = list(cap.records())
        assert isinstance(records[0], Header) and records[1:] == sample_records()
        assert cap.truncated and cap.event_count == 4 and cap.end is None
        assert "ends early after 4 events" in cap.warning
        with pytest.raises(UsageError, match="cannot seek, so it can be read once only"):
            next(cap.records())


def test_each_pass_over_a_path_reports_its_own_facts(sample_path):
    cap = wtrec.open(sample_path)
    for _ in range(2):  # a path is read again from its start by every pass
        assert len(list(cap.records())) == len(sample_records()) + 2
        assert cap.event_count == 4 and not cap.truncated and cap.warning is None
        assert cap.end is not None and cap.end.events == 4


# ---------------------------------------------------------------- payload search, summaries

def test_payload_search_keeps_the_events_whose_data_matches(sample_path):
    import re

    everything = list(wtrec.open(sample_path).events())
    for needle in (b"e", b"GET", b"zzz-not-there"):
        expected = [e for e in everything if needle in e.data]
        assert list(wtrec.open(sample_path).events(payload=needle)) == expected
    pattern = re.compile(rb"[A-Z]{3}")
    assert list(wtrec.open(sample_path).events(payload=pattern)) == [
        e for e in everything if pattern.search(e.data)]
    capture = wtrec.open(sample_path)
    records = list(capture.records(payload=b"zzz-not-there"))
    assert not [r for r in records if isinstance(r, IoEvent)]
    assert any(isinstance(r, End) for r in records)  # other records still pass
    assert capture.event_count == len(everything)  # left-out events are read and counted


def test_payload_search_on_a_pipe_searches_its_first_frame_too(tmp_path):
    # Header and events in one frame (wtrec's writer never does it; the format allows it):
    # a pipe's first frame is decoded with its header, before the search is known.
    import msgpack
    import zstandard

    from wtrec.format import encode_preamble
    from wtrec.wtrace.codec import encode_record

    records = sample_records()
    packed = b"".join(msgpack.packb(encode_record(r), use_bin_type=True)
                      for r in [make_header(), *records])
    one_frame = tmp_path / "one-frame.wtrace"
    one_frame.write_bytes(encode_preamble() + zstandard.ZstdCompressor().compress(packed))
    everything = list(wtrec.open(one_frame, warn=False).events())
    needle = everything[0].data[:4]
    assert len([e for e in everything if needle in e.data]) < len(everything)
    read, write = os.pipe()
    data = one_frame.read_bytes()
    with os.fdopen(write, "wb") as out:  # small enough for the pipe's buffer
        out.write(data)
    with os.fdopen(read, "rb") as stream:
        found = list(wtrec.open(stream, warn=False).events(payload=needle))
    assert found == [e for e in everything if needle in e.data] != []


def test_payload_search_takes_bytes_or_a_bytes_regex(sample_path):
    import re

    for bad in ("text", re.compile("text"), 3):
        with pytest.raises(UsageError, match="payload takes bytes"):
            wtrec.open(sample_path).events(payload=bad)


def test_summaries_are_what_info_prints(sample_path):
    info = json.loads(runner.invoke(app, ["info", "--json", str(sample_path)]).stdout)
    summary, = wtrec.open(sample_path).summaries()
    assert summary.source == info["source"] == "index"
    assert summary.stats.all.events == info["events"]["events"] > 0
    read, write = os.pipe()
    with os.fdopen(write, "wb") as out:
        out.write(sample_path.read_bytes())
    with os.fdopen(read, "rb") as stream:
        piped, = wtrec.open(stream).summaries()
    assert piped.source == "scan"
    assert piped.stats.all.events == summary.stats.all.events
    assert piped.stats.processes.keys() == summary.stats.processes.keys()
