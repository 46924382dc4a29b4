"""The recorder's column lane (wtrec/wtrace/event_table.py) against the row lane it skips.

Runs of plain event records become EventTables; from there to the file
nothing may differ from what rows would have given: the packed bytes, the
index totals, the order, the numbering, the frame cuts. Each test builds
the same events both ways and compares bytes.
"""

import io
from dataclasses import replace

import msgpack
import numpy as np
import pytest
from conftest import make_header
from hypothesis import example, given, settings
from hypothesis import strategies as st
from kernel_bytes import StandInProbe, encode_event, encode_fd_note, ring_block

from wtrec.capture.kernel_records import (
    EVENT_HEADER,
    KIND_EVENT,
    RINGBUF_HEADER,
    RUN_FIELD_OFFSETS,
    SYSCALL_NAMES,
    FdNote,
    KernelDecoder,
)
from wtrec.format import CaptureWriter, StatsAccumulator
from wtrec.records import ROW_SEQ, End, FdIdentity, FdInfo, IoEvent
from wtrec.wtrace.event_table import EventTable, PackedEvents
from wtrec.wtrace.writer import FRAME_MAX_BYTES, FRAME_MAX_RECORDS

PACKER = msgpack.Packer(use_bin_type=True)
GARBAGE = 0xA5  # what the kernel's record may hold past an event's data


def kernel_record(event: IoEvent, room: int) -> bytes:
    raw = encode_event(event)
    return raw + bytes([GARBAGE]) * (EVENT_HEADER.size + room - len(raw))


def table_of(events: list[IoEvent], room: int = 64) -> EventTable:
    """The events as the decoder makes a run of them from a ring buffer, as one table."""
    block = ring_block([kernel_record(e, room) for e in events])
    table = EventTable.plain_run(block, len(events), len(block) // len(events), RUN_FIELD_OFFSETS,
                                 int.from_bytes(block[:4], "little"), KIND_EVENT,
                                 RINGBUF_HEADER + EVENT_HEADER.size, room, 0, dict(SYSCALL_NAMES), 1)
    assert table is not None and len(table) == len(events)
    return table


def packed_rows(rows: list[tuple]) -> bytes:
    return b"".join(map(PACKER.pack, rows))


event_shapes = st.lists(
    st.tuples(st.sampled_from([100, 100, 101, 70000]),  # pid (70000: a uint32 pid)
              st.sampled_from([3, 3, 4, 200, -1]),  # fd
              st.booleans(),  # inbound
              st.sampled_from([64, 64, 64, 0, 5, 63]),  # data length
              st.sampled_from([0, 0, 64, 127, 300, -11, -200, -40000]),  # ret (0: = count)
              st.sampled_from([0, 0, 1, 2**40, 2**60]),  # extra count (asked for more)
              st.sampled_from([b"w", b"w", b"writer", b"fifteen-chars!!"])),
    min_size=8, max_size=400)


def events_of(shapes, step: int = 7) -> list[IoEvent]:
    events = []
    for i, (pid, fd, inbound, size, ret, extra, comm) in enumerate(shapes):
        count = size + extra
        events.append(IoEvent(
            ts_ns=2**33 + i * step, pid=pid, tid=pid + (i % 3 == 0), uid=1000 if i % 9 else 0,
            comm=comm, fd=fd, count=count, data=bytes([65 + i % 26]) * size,
            syscall="read" if inbound else "write", ret=ret or count,
            direction="in" if inbound else "out"))
    return events


@settings(max_examples=150, deadline=None)
@given(event_shapes, st.sampled_from([0, 100, 127, 200, 65_500, 2**32 - 300, 2**40]))
def test_a_table_packs_byte_for_byte_as_its_rows(shapes, first_seq):
    table = table_of(events_of(shapes))
    expected = packed_rows(table.rows(first_seq))
    packed = table.pack(first_seq)
    assert bytes(packed.between(0, len(table))) == expected
    middle = len(table) // 2
    assert bytes(packed.between(0, middle)) + bytes(packed.between(middle, len(table))) == expected


@settings(max_examples=150, deadline=None)
@given(event_shapes, st.sampled_from([0, 100, 65_500, 2**40]))
def test_records_of_a_few_shapes_are_laid_out_byte_for_byte(shapes, first_seq):
    table = table_of(events_of(shapes))
    packed = table._pack_shapes(first_seq)
    if packed is None:  # more shapes than it takes: msgpack packs them
        return
    expected = packed_rows(table.rows(first_seq))
    assert bytes(packed.between(0, len(table))) == expected
    cut = len(table) // 3
    assert bytes(packed.between(0, cut)) + bytes(packed.between(cut, len(table))) == expected


def test_a_server_stream_is_laid_out_by_shapes():
    """Requests read and replies written in turn, payloads of any length: two shapes."""
    events = events_of([(100, 10 + i // 2 % 20, i % 2 == 0, 36 if i % 2 == 0 else i % 64,
                         0, 0, b"redis-server") for i in range(600)])
    events = [replace(e, uid=1000) for e in events]
    table = table_of(events)
    assert table._pack_columns(70_000) is None
    packed = table._pack_shapes(70_000)
    assert packed is not None
    assert bytes(packed.between(0, len(table))) == packed_rows(table.rows(70_000))


def test_same_shaped_records_are_laid_out_by_columns():
    """The fast way is taken when it should be (and still gives msgpack's bytes)."""
    events = [replace(e, uid=1000)
              for e in events_of([(100 + i % 4, 3, False, 64, 0, 0, b"w") for i in range(500)])]
    table = table_of(events)
    layout = table._pack_columns(70_000)
    assert layout is not None
    records, size = layout
    assert records == packed_rows(table.rows(70_000)) and size * len(table) == len(records)
    # one seq crossing 2**16 mixes two int forms: the rows way
    assert table._pack_columns(65_500) is None


def test_a_frame_is_cut_at_the_record_that_reaches_the_byte_bound():
    """As the rows way: records are taken until their bytes reach the budget, that one
    included."""
    for packed in (PackedEvents(b"x" * 100, 10), PackedEvents([b"x" * 10] * 10, 0)):
        assert [packed.taken(0, 10, budget) for budget in (1, 10, 11, 30, 31)] == [1, 1, 2, 3, 4]
        assert packed.taken(2, 5, 1000) == 5
        assert bytes(packed.between(2, 4)) == b"x" * 20
    assert PackedEvents([b"ab", b"cde", b"f"], 0).taken(1, 2, 4) == 2


few_keys = st.lists(
    st.tuples(st.sampled_from([100, 101]), st.just(3), st.booleans(),
              st.sampled_from([64, 0, 5]), st.sampled_from([0, 0, 64, -11]),
              st.sampled_from([0, 0, 1, 2**40]),
              st.sampled_from([b"w", b"writer", b"fifteen-chars!!"])),
    min_size=40, max_size=400)


@settings(max_examples=150, deadline=None)
@given(few_keys, st.integers(0, 400))
def test_table_totals_equal_row_totals(shapes, fd_record_at):
    """Few keys for many events, as under load: the totals are summed by columns."""
    events = events_of(shapes)
    table = table_of(events)
    assert len(table.totals()) * 8 <= len(table)
    cut = min(fd_record_at, len(table))
    info = FdInfo(ts_ns=5, pid=events[0].pid, fd=events[0].fd, identity=FdIdentity("pipe"))
    by_rows, by_table = StatsAccumulator(), StatsAccumulator()
    counted_rows = by_rows.add_rows(table.part(0, cut).rows())
    by_rows.add_batch([info])
    counted_rows2 = by_rows.add_rows(table.part(cut).rows())
    counted = by_table.add_table(table.part(0, cut))
    by_table.add_batch([info])
    counted2 = by_table.add_table(table.part(cut))
    assert by_table.snapshot() == by_rows.snapshot()
    assert (counted, counted2) == (counted_rows, counted_rows2)


def test_sorting_joining_and_cutting_keep_each_event_whole():
    events = events_of([(100 + i % 3, 3 + i % 2, i % 2 == 0, 64 - i % 3, 0, 0, b"w")
                        for i in range(300)])
    table = table_of(events)
    shuffled = table.taken(np.random.default_rng(3).permutation(len(table)))
    wide = table_of(events_of([(100, 3, False, 200, 0, 0, b"w")] * 10), room=256)
    joined = EventTable.joined([shuffled.in_time_order().part(0, 100), wide,
                                shuffled.in_time_order().part(100)])
    rows = joined.rows()
    assert rows[:100] + rows[110:] == table.rows()
    assert rows[100:110] == wide.rows()
    assert sorted(joined.fd_keys()) == sorted({(e.pid, e.fd) for e in events})
    assert joined.first_of(101, 4) == 1


def writer_output(write) -> bytes:
    out = io.BytesIO()
    writer = CaptureWriter(out, make_header(), clock=lambda: 0)
    write(writer)
    writer.close(End(ts_ns=10**12, events=0, bytes=0, lost=0))
    return out.getvalue()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 700), min_size=1, max_size=6), st.sampled_from([64, 1024]),
       st.integers(0, FRAME_MAX_RECORDS - 1))
@example(parts=[700, 700, 700], size=1024, already=0)  # frames closed by bytes, not records
@example(parts=[1, 699], size=1024, already=FRAME_MAX_BYTES // 1000)  # ...in the first piece
def test_the_writer_cuts_frames_where_the_rows_way_cuts(parts, size, already):
    """Tables written across the record and byte bounds of frames, after `already` records
    written one by one, make the file the rows make."""
    count = sum(parts)
    room = 64 if size <= 64 else 1024
    events = events_of([(100 + i % 2, 3, False, size - i % 2 * (size > 64), 0, 0, b"w")
                        for i in range(count)], step=3)
    table = table_of(events, room=room)
    before = [IoEvent(ts_ns=1, pid=1, tid=1, uid=0, comm=b"a", fd=1, count=9, data=b"x" * 900,
                      syscall="write", ret=9, seq=n) for n in range(already)]

    def by_rows(writer):
        for event in before:
            writer.write(event)
        at = 0
        for part in parts:
            writer.write_event_rows(table.part(at, at + part).rows(already + at))
            at += part

    def by_tables(writer):
        for event in before:
            writer.write(event)
        at = 0
        for part in parts:
            data_bytes = writer.write_event_table(table.part(at, at + part), already + at)
            assert data_bytes == sum(len(e.data) for e in events[at:at + part])
            at += part

    assert writer_output(by_tables) == writer_output(by_rows)


def record_capture(block: bytes, step: int, events: int, tables: bool,
                   monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A Recording of the ring bytes, with the decoder's runs as tables or as rows; the
    clocks stand still so that two runs can be compared byte for byte."""
    from wtrec import record
    from wtrec.capture.fd_table import FdTable
    from wtrec.capture.probe import ProbeConfig

    monkeypatch.setattr(record, "boot_ns", lambda: 10**15)
    out = io.BytesIO()
    header = record.recording_header(ProbeConfig(), ())
    header = type(header)(**{**header.__dict__, "start_ns": 1, "anchor_boot_ns": 1,
                             "anchor_real_ns": 1, "host": "h", "argv": ()})
    writer = CaptureWriter(out, header, clock=lambda: 0)
    fds = FdTable(resolver=lambda pid, fd: FdIdentity("pipe", path=f"{pid}:{fd}"))
    recording = record.Recording(StandInProbe(block, step=step, events=events), writer,
                                 record.StopRule(max_events=events), fds=fds,
                                 sleep=lambda _s: None)
    if not tables:
        recording._decoder = KernelDecoder(tables=False)
    recording.run()
    return out.getvalue()


@settings(max_examples=40, deadline=None)
@given(event_shapes, st.lists(st.integers(0, 399), max_size=12),
       st.lists(st.integers(0, 399), max_size=3), st.sampled_from([997, 4096, 1 << 20]))
def test_a_recording_through_tables_is_the_recording_through_rows(shapes, swaps, notes, step):
    """Kernel bytes with runs, odd sizes, neighbours out of time order and fd notes: the
    file is byte for byte the one the row lane writes."""
    events = events_of(shapes)
    raws = [kernel_record(e, 64) for e in events]
    for at in swaps:
        if at + 1 < len(raws):
            raws[at], raws[at + 1] = raws[at + 1], raws[at]
    for at in sorted(set(notes), reverse=True):
        if at < len(events):
            e = events[at]
            raws.insert(at, encode_fd_note(FdNote(
                "close", e.ts_ns - 3, 0, e.pid, e.pid, e.fd, -1, 0, 0, 0, b"")))
    block = ring_block(raws)
    with pytest.MonkeyPatch.context() as monkeypatch:
        through_rows = record_capture(block, step, len(events), False, monkeypatch)
        through_tables = record_capture(block, step, len(events), True, monkeypatch)
    assert through_tables == through_rows


def test_the_decoder_still_hands_rows_where_asked():
    events = events_of([(100, 3, False, 64, 0, 0, b"w")] * 50)
    got = KernelDecoder(tables=False).decode_ring_block(
        ring_block([kernel_record(e, 64) for e in events]))
    assert not got.tables and [row[ROW_SEQ] for row in got.items] == list(range(50))


def test_a_run_claiming_data_in_its_records_padding_is_refused():
    """Records of 60 bytes of room sit 64 apart (8-byte alignment): 62 bytes claimed is
    more than the record holds, whatever the padding after it."""
    from kernel_bytes import encode_event as encode

    from wtrec.capture.kernel_records import BadKernelEvent

    events = events_of([(100, 3, False, 60, 0, 0, b"w")] * 20)
    raws = [bytearray(encode(e, pad_to=EVENT_HEADER.size + 60)) for e in events]
    raws[12][EVENT_HEADER.size - 16 - 2 - 2 - 4:EVENT_HEADER.size - 16 - 2 - 2] = (62).to_bytes(4, "little")
    with pytest.raises(BadKernelEvent):
        KernelDecoder().decode_ring_block(ring_block([bytes(r) for r in raws]))
