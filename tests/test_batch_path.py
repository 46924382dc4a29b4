"""The recorder's batch path against the one-record-at-a-time path it replaces.

The same kernel bytes through `decode_ring_block` (runs of records decoded
by C loops) and through `decode` one by one give the same records; event
rows written in batches give the same file bytes as events written one by
one; the batch reorder and the per-frame totals agree with their
one-at-a-time forms.
"""

import io
import random
import struct

import pytest
from conftest import make_header
from hypothesis import given, settings
from hypothesis import strategies as st
from kernel_bytes import StandInProbe, encode_chunk, encode_event, encode_fd_note, ring_block

from wtrec.capture.kernel_records import (
    EVENT_HEADER,
    FLAG_CHUNKED,
    FLAG_FDS_STALE,
    FLAG_READ_FAULT,
    BadKernelEvent,
    DecodedBlock,
    FdNote,
    KernelDecoder,
)
from wtrec.capture.ordering import ReorderBuffer
from wtrec.format import CaptureReader, CaptureWriter, StatsAccumulator
from wtrec.records import (
    ROW_SEQ,
    End,
    FdIdentity,
    FdInfo,
    IoEvent,
    Lost,
    event_from_row,
    event_row,
)
from wtrec.wtrace.writer import FRAME_MAX_RECORDS


def event(i: int, *, size: int = 64, pid: int = 100, fd: int = 3, direction: str = "out",
          syscall: str = "write", comm: bytes = b"writer") -> IoEvent:
    data = bytes([65 + i % 26]) * size
    return IoEvent(ts_ns=1_000 + i, pid=pid, tid=pid + 1, uid=1000, comm=comm, fd=fd,
                   count=size + (i % 3), data=data, syscall=syscall,
                   ret=-11 if i % 7 == 0 else size, direction=direction)


def note(op: str, pid: int = 100, fd: int = 5, ts_ns: int = 1_000) -> FdNote:
    return FdNote(op=op, ts_ns=ts_ns, ret=fd, pid=pid, tid=pid, fd=fd, fd2=-1, a0=0, a1=0, a2=0,
                  blob=b"/tmp/x\0" if op == "openat" else b"")


def one_by_one(raws: list[bytes]) -> tuple[list, KernelDecoder]:
    """The reference: decode() record by record, as the recorder did before rows."""
    decoder = KernelDecoder()
    return decoder.decode_batch(raws), decoder


def as_records(items: list) -> list:
    return [event_from_row(item[:ROW_SEQ]) if type(item) is tuple else item for item in items]


def in_kernel_order(block: DecodedBlock) -> list:
    """A decoded block's items with each table's events in its place, as rows."""
    items: list = []
    taken = 0
    for before, table in block.tables:
        items += block.items[taken:before]
        items += table.rows()
        taken = before
    return items + block.items[taken:]


def assert_numbered_by_arrival(items: list) -> None:
    """Each event row ends with how many events came before it (its seq, if nothing moves)."""
    rows = [item for item in items if not isinstance(item, FdNote)]
    assert [row[ROW_SEQ] for row in rows] == list(range(len(rows)))


def mixed_records() -> list[bytes]:
    """Runs of same-sized events (reads and writes, two processes, short data, another
    comm), broken by chunked, flagged and fd-note records, and by other sizes."""
    raws = [encode_event(event(i, size=64 - (i % 5 == 0) * 9, pid=100 + i % 2,
                               direction="in" if i % 4 == 0 else "out",
                               syscall="read" if i % 4 == 0 else "write",
                               comm=b"w" if i % 6 == 0 else b"writer"), pad_to=EVENT_HEADER.size + 64)
            for i in range(40)]
    big = event(40, size=20, syscall="writev")
    raws += [encode_chunk(big.tid, big.ts_ns, 0, big.data[:12]),
             encode_chunk(big.tid, big.ts_ns, 12, big.data[12:]),
             encode_event(big, flags=FLAG_CHUNKED),
             encode_fd_note(note("openat", ts_ns=1_041)),
             encode_event(event(42), flags=FLAG_FDS_STALE, pad_to=EVENT_HEADER.size + 64),
             encode_event(event(43, size=0), flags=FLAG_READ_FAULT, pad_to=EVENT_HEADER.size + 64)]
    raws += [encode_event(event(44 + i, size=200), pad_to=EVENT_HEADER.size + 256)
             for i in range(10)]
    raws += [encode_event(event(54 + i, size=3 + i), pad_to=EVENT_HEADER.size + 64)
             for i in range(3)]
    return raws


def test_the_ring_block_decoder_gives_what_one_at_a_time_gives():
    raws = mixed_records()
    expected, reference = one_by_one(raws)
    decoder = KernelDecoder()
    block = ring_block(raws)
    got = decoder.decode_ring_block(block)
    assert got.used == len(block)
    assert as_records(in_kernel_order(got)) == expected
    assert [row[1] if type(row) is tuple else row.ts_ns for row in in_kernel_order(got)] == [
        item.ts_ns for item in expected]
    assert got.tables, "the runs of this stream are decoded as tables"
    assert got.fd_keys == {(item.pid, item.fd) for item in expected if type(item) is IoEvent}
    assert decoder.stats == reference.stats
    rows = [item for item in in_kernel_order(got) if type(item) is tuple]
    assert all(type(row[8]) is bytes and type(row[5]) is bytes for row in rows)
    assert_numbered_by_arrival(in_kernel_order(got))
    # the perf buffer's way in gives the same
    by_records = KernelDecoder().decode_rows(raws).items
    assert as_records(by_records) == expected
    assert_numbered_by_arrival(by_records)


def test_runs_are_decoded_whole_across_step_sizes():
    """A long run, taken in blocks that cut records anywhere: every record once, in order."""
    raws = [encode_event(event(i, pid=100 + i % 3, fd=3 + i % 2), pad_to=EVENT_HEADER.size + 64)
            for i in range(3000)]
    expected, _ = one_by_one(raws)
    block = ring_block(raws)
    decoder = KernelDecoder()
    got, position = [], 0
    rng = random.Random(5)
    while position < len(block):
        part = decoder.decode_ring_block(block[position:position + rng.randrange(100, 40_000)])
        got += in_kernel_order(part)
        position += part.used
    assert as_records(got) == expected
    assert_numbered_by_arrival(got)


def test_discarded_records_are_skipped_and_a_busy_one_stops_the_block():
    raws = [encode_event(event(i), pad_to=EVENT_HEADER.size + 64) for i in range(20)]
    expected, _ = one_by_one(raws)
    block = ring_block(raws, discarded=frozenset({3, 4, 10}), busy=frozenset({15}))
    got = KernelDecoder().decode_ring_block(block)
    kept = [e for n, e in enumerate(expected[:15]) if n not in (3, 4, 10)]
    assert as_records(in_kernel_order(got)) == kept
    assert got.used == 15 * len(ring_block(raws[:1]))  # up to the busy record, not past it


def test_an_unknown_syscall_number_is_named_as_one_at_a_time_names_it():
    raws = []
    for i in range(6):
        raw = bytearray(encode_event(event(i), pad_to=EVENT_HEADER.size + 64))
        struct.pack_into("<H", raw, 60, 63)  # the syscall field
        raws.append(bytes(raw))
    expected, _ = one_by_one(raws)
    got = KernelDecoder().decode_ring_block(ring_block(raws))
    assert as_records(in_kernel_order(got)) == expected
    assert {e.syscall for e in expected} == {"syscall63"}


def test_a_run_claiming_more_data_than_it_carries_is_refused():
    raws = [bytearray(encode_event(event(i), pad_to=EVENT_HEADER.size + 64)) for i in range(6)]
    struct.pack_into("<I", raws[4], 56, 65)  # captured: one byte more than the record holds
    with pytest.raises(BadKernelEvent):
        KernelDecoder().decode_ring_block(ring_block([bytes(r) for r in raws]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 7, 64, 100, 256]), st.integers(0, 3),
                          st.booleans(), st.sampled_from([0, 0, 0, FLAG_FDS_STALE])),
                min_size=1, max_size=120))
def test_any_mix_of_event_sizes_decodes_as_one_at_a_time(shape):
    raws = []
    for i, (size, who, inbound, flags) in enumerate(shape):
        room = 64 if size <= 64 else 256
        raws.append(encode_event(event(i, size=size, pid=100 + who, fd=who,
                                       direction="in" if inbound else "out"),
                                 flags=flags, pad_to=EVENT_HEADER.size + room))
    expected, reference = one_by_one(raws)
    decoder = KernelDecoder()
    got = decoder.decode_ring_block(ring_block(raws))
    assert as_records(in_kernel_order(got)) == expected
    assert decoder.stats == reference.stats
    assert_numbered_by_arrival(in_kernel_order(got))


def numbered(events: list[IoEvent]) -> list[IoEvent]:
    return [IoEvent(**{**e.__dict__, "seq": n}) for n, e in enumerate(events)]


@pytest.mark.parametrize("sizes", [[64] * 3000, [300_000, 5, 700_000, 80_000] * 3 + [64] * 900],
                         ids=["small", "large"])
@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_rows_in_batches_make_the_same_file_as_records_one_by_one(sizes, background):
    events = numbered([event(i, size=size, pid=100 + i % 3) for i, size in enumerate(sizes)])
    third = len(events) // 3
    others = {third: FdInfo(ts_ns=1_500, pid=100, fd=3, identity=FdIdentity("file", path="/x")),
              2 * third: Lost(ts_ns=2_500, count=4, source="ringbuf")}
    end = End(ts_ns=9_999, events=len(events), bytes=0, lost=4)
    one = io.BytesIO()
    writer = CaptureWriter(one, make_header(), clock=lambda: 0)
    for n, e in enumerate(events):
        if n in others:
            writer.write(others[n])
        writer.write(e)
    writer.close(end)
    batched = io.BytesIO()
    writer = CaptureWriter(batched, make_header(), clock=lambda: 0, background=background)
    rows = [(*event_row(e), e.seq) for e in events]
    cuts = [0, third, 2 * third, len(rows)]
    for start, stop in zip(cuts, cuts[1:], strict=False):
        if start in others:
            writer.write(others[start])
        for chunk in range(start, stop, 333):
            data_bytes = writer.write_event_rows(rows[chunk:min(chunk + 333, stop)])
            assert data_bytes == sum(len(e.data) for e in events[chunk:min(chunk + 333, stop)])
    writer.close(end)
    assert batched.getvalue() == one.getvalue()
    records = list(CaptureReader(io.BytesIO(batched.getvalue())))
    assert [r for r in records if isinstance(r, IoEvent)] == events


@pytest.mark.parametrize("in_order", [True, False], ids=["in-order", "late-events"])
@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.booleans(),
                          st.integers(-5, 80), st.integers(0, 3)), min_size=1, max_size=300),
       st.integers(0, 299))
def test_totals_from_rows_equal_totals_from_records(in_order, shape, fd_record_at):
    events = [IoEvent(ts_ns=10_000 - i * 3 if i % 5 == 0 and not in_order else i, pid=pid,
                      tid=pid, uid=0,
                      comm=b"c%d" % (i % 2), fd=fd, count=count, data=b"x" * size, ret=count,
                      seq=i, direction="in" if inbound else "out",
                      syscall="read" if inbound else "write")
              for i, (pid, fd, inbound, count, size) in enumerate(shape)]
    info = FdInfo(ts_ns=5, pid=shape[0][0], fd=shape[0][1], identity=FdIdentity("pipe"))
    cut = min(fd_record_at, len(events))
    by_records = StatsAccumulator()
    counted = [by_records.add_batch(events[:cut])]
    by_records.add_batch([info])
    counted.append(by_records.add_batch(events[cut:]))
    by_rows = StatsAccumulator()
    counted_rows = [by_rows.add_rows([(*event_row(e), e.seq) for e in events[:cut]])]
    by_rows.add_batch([info])
    counted_rows.append(by_rows.add_rows([(*event_row(e), e.seq) for e in events[cut:]]))
    assert by_rows.snapshot() == by_records.snapshot()
    assert counted_rows == counted  # each frame's event count and time range


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 200), max_size=40), min_size=1, max_size=8))
def test_the_batch_reorder_releases_what_the_heap_releases(batches):
    heap, batch = ReorderBuffer(hold_ns=50), ReorderBuffer(hold_ns=50)
    released_heap, released_batch = [], []
    now = 0
    for times in batches:
        items = [FdNote("close", ts, 0, 1, 1, len(released_heap) + n, -1, 0, 0, 0, b"")
                 for n, ts in enumerate(times)]
        for item in items:
            heap.push(item)
        batch.push_batch([item.ts_ns for item in items], items)
        now += 30
        released_heap += heap.release(now)
        released_batch += batch.release_batch(now)
        assert released_batch == released_heap
    assert list(heap.drain()) == batch.drain_batch()


def test_a_frame_of_many_processes_still_counts_each():
    events = [event(i, pid=100 + i % 50, fd=i % 7) for i in range(FRAME_MAX_RECORDS)]
    by_rows = StatsAccumulator()
    by_rows.add_rows([(*event_row(e), n) for n, e in enumerate(events)])
    by_records = StatsAccumulator()
    by_records.add_batch(events)
    assert by_rows.snapshot() == by_records.snapshot()


def process_records(pid: int, ts: int, path: str = "/dev/null") -> list:
    return [FdInfo(ts_ns=ts, pid=pid, fd=3, identity=FdIdentity("file", path=path)),
            IoEvent(ts_ns=ts + 1, pid=pid, tid=pid, uid=0, comm=b"child%d" % (ts % 3), fd=3,
                    count=5, data=b"child", ret=5, seq=ts)]


def accumulate(processes: int, retire: bool) -> tuple[StatsAccumulator, int]:
    """An accumulator fed that many short processes (the last quarter reusing pids, same fd
    and identity), and how much its memory grew after the first 200."""
    import tracemalloc

    stats = StatsAccumulator()
    tracemalloc.start()
    try:
        for n in range(processes):
            pid = 1000 + n % (processes * 3 // 4)
            stats.add_batch(process_records(pid, 10 * n, "/dev/null" if n % 4 else "/tmp/f"))
            if retire:
                stats.retire_process(pid)
            if n == 200:
                start = tracemalloc.get_traced_memory()[0]
        return stats, tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()


def test_totals_of_ended_processes_are_kept_whole_and_out_of_memory():
    """The index still counts every process (a reused pid's rows added up as before), while
    the accumulator's memory stays flat: 10,000 processes cost what 200 do, within 0.5 MiB."""
    kept, kept_growth = accumulate(10_000, retire=False)
    retired, retired_growth = accumulate(10_000, retire=True)
    assert retired_growth < 1 << 19, f"{retired_growth} bytes for 9,800 ended processes"
    assert kept_growth > 4 * retired_growth  # the dictionaries' way, for scale
    assert retired.snapshot() == kept.snapshot()


def test_a_writer_told_of_ended_processes_writes_the_same_index():
    records = [r for n in range(3000) for r in process_records(1000 + n % 2000, 10 * n)]
    plain, told = io.BytesIO(), io.BytesIO()
    for out, tell in ((plain, False), (told, True)):
        writer = CaptureWriter(out, make_header(), clock=lambda: 0)
        for record in records:
            writer.write(record)
            if tell and isinstance(record, IoEvent):
                writer.process_ended(record.pid)
        writer.close(End(ts_ns=10**9, events=3000, bytes=15_000, lost=0))
    assert told.getvalue() == plain.getvalue()


def test_a_recording_from_ring_bytes_writes_what_one_from_records_writes():
    """The recorder's two ways in (ring buffer bytes in steps; separate records, as the perf
    buffer gives them) make the same capture: events, fd records, numbering, order."""
    from wtrec.capture.fd_table import FdTable
    from wtrec.capture.probe import ProbeConfig, RecordCounts
    from wtrec.record import Recording, StopRule, boot_ns, recording_header

    base = boot_ns() - 10**9
    raws = []
    for i in range(3000):
        pid = 100 + i % 3
        if i % 500 == 7:
            raws.append(encode_fd_note(note("openat", pid=pid, fd=5, ts_ns=base + 10 * i)))
        raws.append(encode_event(IoEvent(ts_ns=base + 10 * i + 1, pid=pid, tid=pid, uid=0,
                                         comm=b"w", fd=3 + (i % 500 > 7) * 2, count=9,
                                         data=b"%09d" % i, ret=9),
                                 pad_to=EVENT_HEADER.size + 64))
    block = ring_block(raws)

    class Probe(StandInProbe):
        def __init__(self, ring: bool):
            super().__init__(block, step=len(block) // 7 or 1, events=3000)
            if not ring:  # as the perf buffer: separate records, no ring to peek at
                self.peek_ring = None  # type: ignore[assignment]

        def read(self, max_bytes):
            taken, self.position = raws[self.position:self.position + 300], self.position + 300
            return taken

        def handed_over(self):
            return RecordCounts(events=3000, fd_notes=6)

    captures = []
    for ring in (True, False):
        out = io.BytesIO()
        writer = CaptureWriter(out, recording_header(ProbeConfig(), ()), background=ring)
        fds = FdTable(resolver=lambda pid, fd: FdIdentity("pipe"))
        Recording(Probe(ring), writer, StopRule(max_events=3000), fds=fds,
                  sleep=lambda _s: None).run()
        captures.append([r for r in CaptureReader(io.BytesIO(out.getvalue()))
                         if isinstance(r, (IoEvent, FdInfo))])
    from_ring, from_records = captures
    assert from_ring == from_records
    events = [r for r in from_ring if isinstance(r, IoEvent)]
    assert [e.seq for e in events] == list(range(3000))
    assert [int(e.data) for e in events] == list(range(3000))
    # fd 3 of each process; fd 5 from /proc before its process's open note (two of them),
    # then again as the file the note names (three)
    assert sum(isinstance(r, FdInfo) for r in from_ring) == 8


def test_events_the_reorder_moves_are_numbered_in_file_order():
    """Rows carry the decoder's arrival numbers; where time order differs from arrival (here
    every third pair of neighbours is swapped, and one event comes 1,000 places late), the
    file still numbers its events 0, 1, 2... in file order, which is time order."""
    from wtrec.capture.fd_table import FdTable
    from wtrec.capture.probe import ProbeConfig
    from wtrec.record import Recording, StopRule, boot_ns, recording_header

    base = boot_ns() + 10**12  # all held until the final drain: one sort of everything
    times = [base + 10 * i for i in range(3000)]
    for i in range(0, 2990, 6):
        times[i], times[i + 1] = times[i + 1], times[i]
    times.insert(2500, times.pop(1500))
    raws = [encode_event(IoEvent(ts_ns=ts, pid=100 + i % 3, tid=100, uid=0, comm=b"w", fd=3,
                                 count=9, data=b"%09d" % ((ts - base) // 10), ret=9),
                         pad_to=EVENT_HEADER.size + 64)
            for i, ts in enumerate(times)]
    block = ring_block(raws)

    class Probe(StandInProbe):
        def peek_ring(self, size):
            if self.position == len(block):
                recording.stop()
            return block[self.position:self.position + size // 5]

    out = io.BytesIO()
    writer = CaptureWriter(out, recording_header(ProbeConfig(), ()))
    recording = Recording(Probe(events=3000), writer, StopRule(), sleep=lambda _s: None,
                          fds=FdTable(resolver=lambda pid, fd: FdIdentity("pipe")))
    recording.run()
    events = [r for r in CaptureReader(io.BytesIO(out.getvalue())) if isinstance(r, IoEvent)]
    assert [int(e.data) for e in events] == list(range(3000))
    assert [e.seq for e in events] == list(range(3000))


@pytest.mark.parametrize("shape", ["one-fd-many-pids", "one-pid-many-fds", "many-of-both"])
def test_each_descriptor_is_named_once_before_its_first_event(shape):
    """The recorder finds the batch's unnamed (pid, fd) from the sets of pids and fds when
    one of them has one value, from the pairs otherwise: the same fd records either way."""
    from wtrec.capture.fd_table import FdTable
    from wtrec.capture.probe import ProbeConfig
    from wtrec.record import Recording, StopRule, boot_ns, recording_header

    def who(i: int) -> tuple[int, int]:
        if shape == "one-fd-many-pids":
            return 100 + i % 5, 3
        if shape == "one-pid-many-fds":
            return 100, 3 + i % 5
        return 100 + i % 5, 3 + i % 7

    base = boot_ns() - 10**9
    raws = [encode_event(IoEvent(ts_ns=base + i, pid=who(i)[0], tid=who(i)[0], uid=0, comm=b"w",
                                 fd=who(i)[1], count=9, data=b"%09d" % i, ret=9),
                         pad_to=EVENT_HEADER.size + 64) for i in range(1000)]
    block = ring_block(raws)

    out = io.BytesIO()
    writer = CaptureWriter(out, recording_header(ProbeConfig(), ()))
    Recording(StandInProbe(block, step=2000, events=1000), writer, StopRule(max_events=1000),
              sleep=lambda _s: None,
              fds=FdTable(resolver=lambda pid, fd: FdIdentity("file", path=f"/{pid}/{fd}"))).run()
    records = [r for r in CaptureReader(io.BytesIO(out.getvalue()))
               if isinstance(r, (IoEvent, FdInfo))]
    named: list[tuple[int, int]] = []
    for record in records:
        if isinstance(record, FdInfo):
            named.append((record.pid, record.fd))
            assert record.identity.path == f"/{record.pid}/{record.fd}"
        else:
            assert (record.pid, record.fd) in named
    assert sorted(named) == sorted({who(i) for i in range(1000)})


def test_loss_counters_are_read_now_and_then_and_the_count_stays_exact(monkeypatch):
    """Reading the kernel's counters costs map lookups, so a busy recorder reads them at
    most every LOSS_CHECK_NS (and at the end): the losses in the file add up exactly."""
    from wtrec import record
    from wtrec.capture.fd_table import FdTable
    from wtrec.capture.probe import ProbeConfig, RecordCounts
    from wtrec.record import Recording, StopRule, recording_header

    clock = [10**12]
    monkeypatch.setattr(record, "boot_ns", lambda: clock[0])
    raws = [encode_event(IoEvent(ts_ns=10**11 + i, pid=100, tid=100, uid=0, comm=b"w", fd=3,
                                 count=9, data=b"%09d" % i, ret=9),
                         pad_to=EVENT_HEADER.size + 64) for i in range(2000)]
    block = ring_block(raws)

    class Probe(StandInProbe):
        reads = 0
        stopped = False

        def peek_ring(self, size):
            clock[0] += 1_000_000  # a step every millisecond, each finding 13 records
            return block[self.position:self.position + 13 * len(block) // 2000]

        def stop_producing(self):
            self.stopped = True

        def lost(self):
            self.reads += 1  # losses keep growing, up to the stop
            return RecordCounts(events=self.position // 1000 + 7 * self.stopped)

    probe = Probe(events=2000)
    out = io.BytesIO()
    writer = CaptureWriter(out, recording_header(ProbeConfig(), ()))
    stats = Recording(probe, writer, StopRule(max_events=2000), sleep=lambda _s: None,
                      fds=FdTable(resolver=lambda pid, fd: FdIdentity("pipe"))).run()
    steps = clock[0] // 1_000_000 - 10**6
    assert steps >= 150
    assert probe.reads <= steps * 1_000_000 // record.LOSS_CHECK_NS + 2
    lost = sum(r.count for r in CaptureReader(io.BytesIO(out.getvalue())) if isinstance(r, Lost))
    assert lost == stats.lost == len(block) // 1000 + 7


def test_the_collector_runs_from_the_loop_and_is_restored(monkeypatch):
    """While recording, Python's cyclic collector is off and run by the loop once a
    COLLECT_EVERY_NS: a reference cycle made during the recording is freed before the end;
    afterwards the collector is on again."""
    import gc
    import weakref

    from wtrec import record
    from wtrec.capture.fd_table import FdTable
    from wtrec.capture.probe import ProbeConfig
    from wtrec.record import Recording, StopRule, recording_header

    clock = [10**12]
    monkeypatch.setattr(record, "boot_ns", lambda: clock[0])

    class Cycle:
        def __init__(self):
            self.me = self

    class Probe(StandInProbe):
        steps = 0
        enabled_while_recording: set[bool] = set()
        cycles: list = []

        def peek_ring(self, size):
            clock[0] += record.COLLECT_EVERY_NS // 10
            self.steps += 1
            self.enabled_while_recording.add(gc.isenabled())
            self.cycles.append(weakref.ref(Cycle()))
            if self.steps == 35:
                recording.stop()
            return b""

    probe = Probe()
    writer = CaptureWriter(io.BytesIO(), recording_header(ProbeConfig(), ()))
    recording = Recording(probe, writer, StopRule(), sleep=lambda _s: None,
                          fds=FdTable(resolver=lambda pid, fd: FdIdentity("pipe")))
    assert gc.isenabled()
    recording.run()
    assert probe.enabled_while_recording == {False}
    assert gc.isenabled()
    freed = [ref() is None for ref in probe.cycles]
    assert all(freed[:20])  # made more than a collection period before the end
