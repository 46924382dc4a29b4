"""The one-pass checked decoding of common frames gives what the general decoder gives.

checked_frames may only ever agree with codec's record-by-record rules: for
any frame it either yields the same records or steps aside (None), in which
case the general decoder reads the frame and raises its own errors.
"""

import msgpack
import pytest
from conftest import make_header
from hypothesis import given, settings
from hypothesis import strategies as st

from wtrec.errors import FormatError
from wtrec.format import CaptureReader, CaptureWriter
from wtrec.records import End, IoEvent
from wtrec.tools import byte_search
from wtrec.wtrace import checked_frames, codec
from wtrec.wtrace.codec import iter_frame, no_events

U64 = (1 << 64) - 1


def event(kind=2, ts=5, pid=7, tid=8, uid=0, comm=b"cat", fd=3, count=4, data=b"abcd",
          syscall="write", ret=4, seq=0):
    return [kind, ts, pid, tid, uid, comm, fd, count, data, syscall, ret, seq]


def frame_of(records) -> bytes:
    return b"".join(msgpack.packb(r, use_bin_type=True) for r in records)


def general(content, keep=None, find=None, monkeypatch=None):
    """What the general decoder alone makes of a frame: (records, events) or the error."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_decode_checked", lambda *_args: None)
        return decoded(content, keep, find)


def decoded(content, keep=None, find=None):
    tally = [0]
    try:
        records = [r for chunk in iter_frame(content, 0, False, keep, tally, find=find)
                   for r in chunk]
    except FormatError as exc:
        return "error", str(exc)
    return records, tally[0]


def test_a_writers_frame_takes_the_checked_way_and_gives_the_same_records():
    records = [event(seq=i, data=b"x" * i) for i in range(300)]
    records[17] = [6, 5, 7, 3, "tcp", "1.2.3.4:5", None, None]
    records[40] = [3, 9, 12, "ringbuf"]
    records[299] = [4, 10, 298, 1000, 12]
    records[100] = event(kind=5, syscall="read", ret=-11, fd=-1, ts=U64, seq=U64)
    content = frame_of(records)
    count, bounds = checked_frames.record_bounds(content, codec.CHUNK_RECORDS)
    assert count == 300
    assert len(bounds) == 300 // codec.CHUNK_RECORDS
    assert checked_frames.decode(content, count) is not None  # not stepping aside
    assert decoded(content) == general(content)
    events = [r for r in decoded(content)[0] if isinstance(r, IoEvent)]
    assert len(events) == 297
    assert [e.seq for e in events if e.direction == "in"] == [U64]


@pytest.mark.parametrize("odd", [
    event(ret=None), event(seq=None), event(ts=-1), event(pid=1 << 32), event(fd=1 << 31),
    event(ret=1 << 63), event(syscall=""), event(syscall=b"write"), event(data="text"),
    event(comm=None), event(count=True), event(ts=1.5), [*event(), "tls", None],
    event()[:11], [9, 1, 2], [1], [], {"a": 1}, 7, None, [6, 5, 7, 3, 4, None, None, None],
    [6, 5, 7, 3, "tcp", None, None], [3, 1, 2, None], [4, 1, 2, 3, -4],
    [2, msgpack.ExtType(1, b"x"), 7, 8, 0, b"c", 3, 4, b"d", "write", 4, 0],
])
def test_anything_uncommon_is_left_to_the_general_decoder(odd):
    content = frame_of([event(), odd, event(seq=1)])
    counted = checked_frames.record_bounds(content, 128)
    assert counted is not None and counted[0] == 3
    assert checked_frames.decode(content, 3) is None
    assert decoded(content) == general(content)


def test_a_frame_cut_inside_a_record_or_miscounted_is_not_taken():
    content = frame_of([event(), event(seq=1)])
    assert checked_frames.record_bounds(content[:-1], 128) == (1, [])
    assert checked_frames.decode(content[:-1], 1) is None
    assert checked_frames.decode(content, 1) is None
    assert checked_frames.decode(content, 3) is None
    assert decoded(content[:-1]) == general(content[:-1])
    assert decoded(content[:-1])[0] == "error"


values = st.one_of(st.integers(-(1 << 63), U64), st.binary(max_size=8), st.text(max_size=4),
                   st.none(), st.booleans(), st.floats(allow_nan=False))
records = st.one_of(
    st.builds(event, kind=st.sampled_from([2, 5]), ts=st.integers(0, U64),
              fd=st.integers(-(1 << 31), (1 << 31) - 1), data=st.binary(max_size=40),
              ret=st.integers(-(1 << 63), (1 << 63) - 1)),
    st.builds(lambda r, i, v: r[:i] + [v] + r[i + 1:], st.builds(event),
              st.integers(0, 11), values),
    st.builds(lambda ts, ident: [6, ts, 7, 3, "tcp", ident, None, "/p"],
              st.integers(0, U64), st.one_of(st.none(), st.text(max_size=5), values)),
    st.builds(lambda c: [3, 1, c, "ringbuf"], values),
    st.lists(values, min_size=0, max_size=13).map(lambda tail: [4, *tail]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(records, max_size=300), st.binary(min_size=1, max_size=3))
def test_both_ways_agree_on_any_frame(frame_records, needle):
    content = frame_of(frame_records)
    assert decoded(content) == general(content)
    def keep(data):
        return needle in data

    find = byte_search.finder(needle)
    assert decoded(content, keep, find) == general(content, keep, find)
    assert decoded(content, no_events) == general(content, no_events)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=4), st.integers(-250, 250))
def test_byte_search_finds_what_bytes_find_finds(haystack, needle, start):
    assert byte_search.finder(needle)(haystack, start) == haystack.find(needle, start)
    assert byte_search.finder(needle)(bytearray(haystack), start) == haystack.find(needle, start)


def indexed_capture(path):
    """3000 events over three frames, closed cleanly (so the file has an index)."""
    events = [IoEvent(5 + i, 7, 8, 0, b"cat", 3, 4, b"x%d needle" % i if i % 700 == 0 else b"x%d" % i,
                      "write", 4, i) for i in range(3000)]
    with open(path, "wb") as out:
        writer = CaptureWriter(out, make_header(format_minor=2))
        for e in events:
            writer.write(e)
        writer.close(End(10_000, len(events), sum(len(e.data) for e in events), 0))
    return events


def read_all(path, keep=None, find=None):
    with open(path, "rb") as stream:
        return [r for r in CaptureReader(stream, keep=keep, find_in_frame=find)
                if isinstance(r, IoEvent)]


def test_the_index_spares_counting_a_frames_records(tmp_path, monkeypatch):
    path = tmp_path / "indexed.wtrace"
    events = indexed_capture(path)
    counted = []
    record_bounds = checked_frames.record_bounds
    monkeypatch.setattr(checked_frames, "record_bounds",
                        lambda *args: counted.append(1) or record_bounds(*args))
    assert read_all(path) == events
    assert counted == []  # every frame's count came from the index
    needle = b"needle"
    kept = read_all(path, lambda data: needle in data, byte_search.finder(needle))
    assert kept == [e for e in events if needle in e.data] and len(kept) == 5


@pytest.mark.parametrize("wrong", [lambda n: n - 1, lambda n: n + 1, lambda n: 0,
                                   lambda n: 1 << 40, lambda n: -3])
def test_a_wrong_count_in_the_index_is_only_a_wasted_try(tmp_path, monkeypatch, wrong):
    path = tmp_path / "indexed.wtrace"
    events = indexed_capture(path)
    right = CaptureReader._record_counts
    monkeypatch.setattr(CaptureReader, "_record_counts",
                        lambda self: {offset: wrong(n) for offset, n in right(self).items()})
    assert read_all(path) == events
    needle = b"needle"
    kept = read_all(path, lambda data: needle in data, byte_search.finder(needle))
    assert kept == [e for e in events if needle in e.data]


def test_a_reading_that_stops_at_the_header_never_reads_the_index(tmp_path, monkeypatch):
    from wtrec.wtrace import index as index_module

    path = tmp_path / "indexed.wtrace"
    events = indexed_capture(path)
    reads = []
    read_index = index_module.read_index
    monkeypatch.setattr(index_module, "read_index",
                        lambda stream: reads.append(1) or read_index(stream))
    with open(path, "rb") as stream:
        records = iter(CaptureReader(stream))
        next(records)  # the header
        records.close()
    assert reads == []
    assert read_all(path) == events and reads == [1]  # read once, beside the read-ahead
