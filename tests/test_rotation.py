"""Rotation (record -C/-G/-W) without a kernel: names, the rotating writer on a fake
clock, the recording loop over it, the 1.3 header field, and series in info/merge/API."""

import io
import random
from pathlib import Path

import msgpack
import pytest
from conftest import build_capture, make_header
from kernel_bytes import encode_event
from test_recorder import FakeProbe, event, note
from typer.testing import CliRunner

import wtrec
from wtrec.capture.fd_table import FdTable
from wtrec.capture.probe import ProbeConfig
from wtrec.cli.app import app
from wtrec.errors import FormatError, OutputError
from wtrec.format import FORMAT_MINOR, CaptureReader
from wtrec.record import Recording, StopRule, boot_ns, recording_header
from wtrec.records import End, FdIdentity, FdInfo, Header, IoEvent, Lost, SeriesPart
from wtrec.rotation import RotatingWriter, RotationRule, series_path
from wtrec.tools.info import series_lines
from wtrec.tools.merge import merged_records
from wtrec.wtrace.codec import encode_record
from wtrec.wtrace.framing import encode_preamble


class FakeFile:
    """One file of a series, kept in memory; `disk` maps path -> bytes of closed files."""

    def __init__(self, path: str, disk: dict[str, bytes]):
        self.path = path
        self.stream = io.BytesIO()
        self.disk = disk

    def close(self) -> None:
        self.disk[self.path] = self.stream.getvalue()

    def discard(self) -> None:
        pass

    def remove_finished(self) -> None:
        del self.disk[self.path]


class Clock:
    def __init__(self, now: int = 0):
        self.now = now

    def __call__(self) -> int:
        return self.now


def rotating(rule: RotationRule, clock: Clock, disk: dict[str, bytes]) -> RotatingWriter:
    return RotatingWriter("run.wtrace", recording_header(ProbeConfig(), ()), rule,
                          open_file=lambda path: FakeFile(path, disk), clock=clock,
                          series_id="feedc0de")


def read(data: bytes) -> list:
    return list(CaptureReader(io.BytesIO(data)))


@pytest.mark.parametrize(("path", "index", "name"), [
    ("run.wtrace", 0, "run.000.wtrace"),
    ("dir/run.wtrace", 7, "dir/run.007.wtrace"),
    ("run.wtrace", 1234, "run.1234.wtrace"),
    ("run", 2, "run.002"),
    ("run.pcap", 0, "run.pcap.000"),
    (".wtrace", 0, ".wtrace.000"),
    ("dir/.wtrace", 1, "dir/.wtrace.001"),
])
def test_series_names(path, index, name):
    assert series_path(path, index) == name


def test_every_seconds_rotates_on_the_clock_and_each_file_stands_alone():
    clock, disk = Clock(), {}
    writer = rotating(RotationRule(every_ns=10), clock, disk)
    seq = 0
    for tick in range(25):
        clock.now = tick
        writer.write(IoEvent(ts_ns=tick, pid=1, tid=1, uid=0, comm=b"c", fd=3, count=2,
                             data=b"hi", seq=seq))
        seq += 1
        if tick == 12:
            writer.write(Lost(ts_ns=tick, count=4, source="ringbuf"))
        began = writer.tick()
        assert began == (tick in (10, 20))
    writer.close(End(ts_ns=99, events=seq, bytes=2 * seq, lost=4))
    assert sorted(disk) == ["run.000.wtrace", "run.001.wtrace", "run.002.wtrace"]
    seqs = []
    for index, path in enumerate(sorted(disk)):
        records = read(disk[path])
        header, end = records[0], records[-1]
        assert isinstance(header, Header) and header.series == SeriesPart("feedc0de", index)
        assert (header.format_major, header.format_minor) == (1, FORMAT_MINOR)
        events = [r for r in records if isinstance(r, IoEvent)]
        lost = sum(r.count for r in records if isinstance(r, Lost))
        assert isinstance(end, End)
        assert (end.events, end.bytes, end.lost) == (len(events), 2 * len(events), lost)
        seqs += [e.seq for e in events]
    assert [len(read(disk[p])) for p in sorted(disk)][0] == 11 + 2  # header, 11 events, end
    assert seqs == list(range(25))
    assert read(disk["run.001.wtrace"])[-1].lost == 4  # the loss is where it was seen


def test_size_rotates_at_a_frame_boundary_past_it():
    clock, disk = Clock(), {}
    writer = rotating(RotationRule(max_bytes=20_000), clock, disk)
    rng = random.Random(1)
    for n in range(40):
        writer.write(IoEvent(ts_ns=n, pid=1, tid=1, uid=0, comm=b"c", fd=3, count=2000,
                             data=rng.randbytes(2000), seq=n))
        if n % 4 == 3:
            writer.flush()  # as the recorder's frames end
        writer.tick()
    writer.close(End(ts_ns=99, events=40, bytes=80_000, lost=0))
    assert len(disk) >= 3
    for path in sorted(disk)[:-1]:
        assert 20_000 <= len(disk[path]) < 20_000 + 4 * 2100 + 1000
    assert sum(read(d)[-1].events for d in disk.values()) == 40


def test_file_count_keeps_the_newest_files_only():
    clock, disk = Clock(), {}
    writer = rotating(RotationRule(every_ns=1, keep=2), clock, disk)
    for tick in range(1, 6):
        clock.now = tick
        writer.tick()
    writer.close(End(ts_ns=9, events=0, bytes=0, lost=0))
    assert sorted(disk) == ["run.004.wtrace", "run.005.wtrace"]
    assert writer.removed == [f"run.00{i}.wtrace" for i in range(4)]


def test_a_rotated_recording_names_each_descriptor_again_in_every_file():
    """The fd record of a descriptor opened in file 0 is repeated before its first
    event in each later file; seq numbers run on across files with none twice."""
    now = boot_ns() - 10**9
    fds = FdTable(resolver=lambda _pid, _fd: None)
    batches = [[note("openat", 7, path=b"/tmp/log\0", ts_ns=now),
                note("openat", 8, fd=4, path=b"/tmp/other\0", ts_ns=now)]]
    batches += [[encode_event(event(7, data=b"%d" % n, ts_ns=now + 1 + 2 * n)),
                 encode_event(event(8, fd=4, data=b"x", ts_ns=now + 2 + 2 * n))]
                for n in range(30)]
    probe = FakeProbe(batches)
    clock, disk = Clock(), {}
    writer = rotating(RotationRule(every_ns=5), clock, disk)
    recording = Recording(probe, writer, StopRule(), fds=fds, sleep=lambda _s: None)
    original_step = recording._step

    def step() -> int:
        clock.now += 1
        taken = original_step()
        if not probe.batches:
            recording.stop()
        return taken

    recording._step = step  # type: ignore[method-assign]
    stats = recording.run()
    assert len(disk) >= 5 and stats.events == 60
    seqs = []
    for path in sorted(disk):
        named = set()
        for record in read(disk[path]):
            if isinstance(record, FdInfo):
                named.add((record.pid, record.fd))
                want = "/tmp/log" if record.pid == 7 else "/tmp/other"
                assert record.identity == FdIdentity("file", path=want)
            elif isinstance(record, IoEvent):
                assert (record.pid, record.fd) in named, (path, record)
                seqs.append(record.seq)
    assert seqs == list(range(60))


def test_series_header_field_round_trips_and_old_headers_have_none():
    header = make_header(format_minor=3, series=SeriesPart("abc", 5))
    assert read(build_capture(header=header))[0].series == SeriesPart("abc", 5)
    old = encode_record(make_header(format_minor=2))  # outside a series: as in 1.2
    assert len(old) == 14
    assert read(_capture_of(old))[0].series is None
    assert read(_capture_of([*old, None]))[0].series is None  # nil is read as absent
    assert read(build_capture(header=make_header()))[0].series is None


def _capture_of(header_fields: list) -> bytes:
    import zstandard
    frame = zstandard.ZstdCompressor().compress(msgpack.packb(header_fields, use_bin_type=True))
    return encode_preamble(1, 2) + frame


@pytest.mark.parametrize("bad", [["abc"], ["", 1], [7, 1], ["abc", -1], ["abc", 1 << 33],
                                 ["x" * 65, 0], "abc"])
def test_a_bad_series_field_is_a_format_error(bad):
    fields = [*encode_record(make_header(format_minor=3)), bad]
    with pytest.raises(FormatError, match="series"):
        read(_capture_of(fields))


def _series_files(tmp_path, count: int = 4) -> list[str]:
    clock, disk = Clock(), {}
    writer = rotating(RotationRule(every_ns=1), clock, disk)
    seq = 0
    for tick in range(count):
        clock.now = tick
        writer.write(FdInfo(ts_ns=1_000_000_000 + tick, pid=1, fd=3,
                            identity=FdIdentity("pipe")))
        for _ in range(3):
            writer.write(IoEvent(ts_ns=1_000_000_000 + tick, pid=1, tid=1, uid=0, comm=b"c",
                                 fd=3, count=1, data=b"%d" % seq, seq=seq))
            seq += 1
        writer.tick()
    writer.close(End(ts_ns=2_000_000_000, events=seq, bytes=0, lost=0))
    paths = []
    for name, data in sorted(disk.items()):
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def test_merge_of_a_series_keeps_seq_order_whatever_the_input_order(tmp_path):
    paths = _series_files(tmp_path)
    inputs = []
    for path in reversed(paths):
        records = read(Path(path).read_bytes())
        inputs.append((records, records[0]))
    merged = list(merged_records(inputs, inputs[0][1]))
    assert [r.seq for r in merged if isinstance(r, IoEvent)] == list(range(len(paths) * 3))


def test_merge_command_on_a_series(tmp_path):
    paths = _series_files(tmp_path)
    out = str(tmp_path / "all.wtrace")
    result = CliRunner().invoke(app, ["merge", "-o", out, *reversed(paths)])
    assert result.exit_code == 0, result.output
    records = read(Path(out).read_bytes())
    assert records[0].series is None  # a merged file is no file of the series
    events = [r for r in records if isinstance(r, IoEvent)]
    assert [e.seq for e in events] == list(range(12))
    assert [e.data for e in events] == [b"%d" % n for n in range(12)]


def test_info_on_a_series_says_which_files_are_missing(tmp_path):
    paths = _series_files(tmp_path, count=5)
    given = [paths[0], paths[1], paths[4]]
    result = CliRunner().invoke(app, ["info", *given])
    assert result.exit_code == 0, result.output
    assert "series      feedc0de, file 4" in result.output
    assert "series      feedc0de: 3 files, index 0 .. 4, missing 2: 2, 3" in result.output
    headers = [read(Path(p).read_bytes())[0] for p in paths]
    assert list(series_lines(headers)) == [
        "series      feedc0de: 5 files, index 0 .. 4, none missing between them"]


def test_the_api_reads_a_series_in_index_order(tmp_path):
    paths = _series_files(tmp_path)
    with wtrec.open(list(reversed(paths))) as capture:
        assert [h.series.index for h in capture.headers] == [0, 1, 2, 3]
        events = list(capture.events())
    assert [e.seq for e in events] == list(range(12))
    assert all(e.identity == FdIdentity("pipe") for e in events)


@pytest.mark.parametrize(("args", "needle"), [
    (["-C", "1M", "-o", "-"], "give -o FILE"),
    (["-G", "5", "-o", "-"], "give -o FILE"),
    (["-W", "3", "-o", "x.wtrace"], "give -C or -G"),
    (["-C", "12", "-o", "x.wtrace"], "-C/--file-size must be between 1K"),
    (["-C", "lots", "-o", "x.wtrace"], "-C/--file-size takes bytes"),
    (["-G", "0", "-o", "x.wtrace"], "more than 0"),
])
def test_rotation_usage_errors(args, needle):
    result = CliRunner().invoke(app, ["record", "-c", "x", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_when_the_next_file_cannot_be_made_the_last_one_is_closed_cleanly():
    clock, disk = Clock(), {}

    def open_file(path: str) -> FakeFile:
        if path == "run.001.wtrace":
            raise OutputError(f"{path} exists; give --force to overwrite it")
        return FakeFile(path, disk)

    writer = RotatingWriter("run.wtrace", recording_header(ProbeConfig(), ()),
                            RotationRule(every_ns=1), open_file=open_file, clock=clock)
    writer.write(IoEvent(ts_ns=1, pid=1, tid=1, uid=0, comm=b"c", fd=3, count=1, data=b"a",
                         seq=0))
    clock.now = 1
    with pytest.raises(OutputError, match="exists"):
        writer.tick()
    end = read(disk["run.000.wtrace"])[-1]
    assert isinstance(end, End) and end.events == 1
    writer.abandon()  # what the CLI does after the error: nothing left open to close
