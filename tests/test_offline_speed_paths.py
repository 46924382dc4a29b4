"""The fast paths of the offline reader give what the record-by-record path gives.

grep builds only the events that can match (a whole frame's bytes are
searched first, then each payload) and the reader checks a frame's events a
column at a time; these tests hold both to the plain per-event answers and
errors, and check that `show` on a pipe shows what has arrived.
"""

import io
import os
import select
import subprocess

import msgpack
import pytest
from conftest import make_header, wtrec_cmd
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hostile import crafted, event
from typer.testing import CliRunner

from wtrec.cli.app import app
from wtrec.errors import FormatError
from wtrec.format import CaptureWriter
from wtrec.records import End, FdIdentity, FdInfo, IoEvent, Lost
from wtrec.tools.grep import frame_finder, literal_of, payload_test
from wtrec.tools.selection import compile_pattern
from wtrec.wtrace import reader as reader_module
from wtrec.wtrace.codec import MAX_FRAME_OBJECTS, decode_frame, encode_record, iter_frame
from wtrec.wtrace.reader import CaptureReader

runner = CliRunner()
BASE = 1_000_000_000
WORDS = [b"GET /a", b"word", b"needle", b"NEEDLE", b"xy", b"a.b^c", b"write", b"sword ",
         b"\x9c\x02", b"tail GET", b""]


def many_frames(path) -> list[IoEvent]:
    """3000 events over three frames, with payloads made of awkward words."""
    events = []
    out = io.BytesIO()
    writer = CaptureWriter(out, make_header(format_minor=2))
    writer.write(FdInfo(BASE, 10, 3, FdIdentity("tcp", "127.0.0.1:1", "127.0.0.1:2")))
    for i in range(3000):
        data = WORDS[i % len(WORDS)] + b" " + WORDS[(i * 7) % len(WORDS)]
        if i % 500 == 0:
            writer.write(Lost(BASE + i, 1, "ringbuf"))
        events.append(event(i, data, fd=3 + i % 3))
        writer.write(events[-1])
    writer.close(End(BASE + 5000, len(events), sum(len(e.data) for e in events), 6))
    path.write_bytes(out.getvalue())
    return events


PATTERNS = [
    ("needle", []), ("^GET", []), ("GET$", []), (r"\bword\b", []), ("x(?=y)", []),
    ("(?i)needle", []), ("needle", ["-i"]), ("NeEdLe", ["-i", "-F"]), ("a.b^C", ["-i", "-F"]),
    ("a.b^c", ["-F"]), ("a.b", []), ("write", []),
    (r"\x9c", []), ("", []), ("absent", []), ("w.rd|tail", []), (r"(GET) \1", []),
]


@pytest.mark.parametrize(("pattern", "flags"), PATTERNS)
def test_grep_counts_what_searching_every_payload_counts(tmp_path, pattern, flags):
    path = tmp_path / "many.wtrace"
    events = many_frames(path)
    regex = compile_pattern(pattern, "-F" in flags, "-i" in flags)
    expected = sum(1 for e in events if regex.search(e.data))
    counted = runner.invoke(app, ["grep", "-c", *flags, "--", pattern, str(path)])
    assert counted.stdout == f"{expected}\n", counted.output
    inverted = runner.invoke(app, ["grep", "-c", "-v", *flags, "--", pattern, str(path)])
    assert inverted.stdout == f"{len(events) - expected}\n"
    shown = runner.invoke(app, ["grep", *flags, "--", pattern, str(path)])
    titles = [line for line in shown.stdout.splitlines() if line.startswith("#")]
    assert len({t.split()[0] for t in titles}) == expected


def test_frame_search_is_not_used_for_patterns_that_look_around():
    for pattern in ("^a", "a$", r"\ba", r"\Ba", r"\Aa", r"a\Z", "(?=a)", "(?<!a)b", "(?m)a"):
        assert frame_finder(compile_pattern(pattern)) is None, pattern
    for pattern, fixed in (("abc", False), ("a.c", False), ("^a$", True), ("(x)", True)):
        assert frame_finder(compile_pattern(pattern, fixed)) is not None, pattern
    assert literal_of(compile_pattern("a.b^c", fixed=True)) == b"a.b^c"
    assert literal_of(compile_pattern("a.b")) is None
    assert literal_of(compile_pattern("aB", ignore_case=True)) == b"aB"
    assert literal_of(compile_pattern(r"a\d")) is None


GOOD = [2, BASE, 10, 10, 1000, b"app", 3, 4, b"data", "write", 4, 0]
BAD = [(1, -1), (2, 1 << 32), (3, "x"), (4, True), (5, "app"), (6, 1 << 31), (7, -1),
       (8, "data"), (9, 7), (10, 1 << 63), (11, -1), (11, 1.5), (2, None)]


@pytest.mark.parametrize(("field", "value"), BAD)
def test_every_event_field_is_checked_whichever_path_reads_it(field, value):
    rows = [list(GOOD) for _ in range(100)]
    rows[50][field] = value
    content = b"".join(msgpack.packb(r, use_bin_type=True) for r in rows)
    alone = msgpack.packb(rows[50], use_bin_type=True)
    with pytest.raises(FormatError) as single:
        decode_frame(alone, 0, False)
    for keep in (None, lambda data: False, lambda data: b"t" in data):
        with pytest.raises(FormatError) as many:
            decode_frame(content, 0, False, keep)
        assert many.value.reason == single.value.reason


def test_grep_still_refuses_a_bad_event_in_a_frame_that_cannot_match(tmp_path):
    bad = [2, BASE, 10, 10, 1000, b"app", 3, 4, b"data", "write", 4, -5]  # seq below 0
    good = msgpack.packb(encode_record(event(0, b"NEEDLE")), use_bin_type=True)
    path = tmp_path / "bad.wtrace"
    path.write_bytes(crafted(good, msgpack.packb(bad, use_bin_type=True)))
    result = runner.invoke(app, ["grep", "-c", "NEEDLE", str(path)])
    assert result.exit_code == 2 and "sequence number" in result.stderr, result.output


def test_a_frame_mixing_records_keeps_their_order():
    records = [FdInfo(BASE, 10, 3, FdIdentity("file", path="/a")), event(1, b"one"),
               Lost(BASE + 2, 1, "ringbuf"), event(3, b"two", fd=4),
               FdInfo(BASE + 4, 10, 4, FdIdentity("pipe")), event(5, b"three")]
    content = b"".join(msgpack.packb(encode_record(r), use_bin_type=True) for r in records)
    assert decode_frame(content, 0, False) == (records, 3)
    kept = [r for r in records if not isinstance(r, IoEvent) or b"t" in r.data]
    assert decode_frame(content, 0, False, lambda data: b"t" in data) == (kept, 3)


def test_show_on_a_pipe_shows_each_event_as_its_frame_arrives(tmp_path):
    """Issue 9: show streams; the first output comes before the input ends."""
    out = io.BytesIO()
    writer = CaptureWriter(out, make_header(format_minor=2))
    writer.write(event(0, b"first-payload"))
    writer.flush()
    child = subprocess.Popen(wtrec_cmd("show", "-", "--color", "never"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        child.stdin.write(out.getvalue())
        child.stdin.flush()  # the recording goes on: stdin stays open
        seen = b""
        while b"first-payload" not in seen:
            ready, _, _ = select.select([child.stdout], [], [], 60)
            assert ready, f"nothing shown yet: {seen!r}"
            chunk = os.read(child.stdout.fileno(), 65536)
            assert chunk, child.stderr.read()
            seen += chunk
    finally:
        child.stdin.close()
        child.wait(timeout=60)
    assert child.returncode == 0


def test_the_object_bound_holds_on_both_sides_of_where_counting_starts():
    """Frames up to 2^18 bytes cannot hold more objects; bigger ones are counted."""
    nils = b"\xdc\x10\x00" + b"\xc0" * 4096  # an array of 4096 nils: 4097 objects

    def record(arrays: int) -> bytes:  # [99, [nils, nils, ...]]: an unknown type
        return b"\x92\x63\xdc" + arrays.to_bytes(2, "big") + nils * arrays

    assert len(record(63)) < MAX_FRAME_OBJECTS
    assert decode_frame(record(63), 0, False) == ([], 0)
    assert len(record(64)) > MAX_FRAME_OBJECTS
    with pytest.raises(FormatError, match="msgpack objects"):
        decode_frame(record(64), 0, False)


field_values = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.sampled_from([0, 1, 2, 5, 2**31, 2**32, -1]),
    st.binary(max_size=8), st.text(max_size=8), st.none(), st.booleans(), st.floats())


@st.composite
def event_rows(draw):
    """Event-shaped rows, mostly valid, with a few fields swapped for anything."""
    row = list(GOOD)
    row[0] = draw(st.sampled_from([2, 5, 2, 5, 4, 6, 99, True, 2.0]))
    for index in draw(st.lists(st.integers(1, 11), max_size=2)):
        row[index] = draw(field_values)
    return row[:draw(st.sampled_from([12, 12, 12, 10, 13]))]


@settings(max_examples=300, deadline=None)
@given(st.lists(event_rows(), max_size=30), st.sampled_from([None, "none", "t"]))
def test_the_column_path_agrees_with_record_by_record_decoding(rows, keep_name):
    keep = {None: None, "none": lambda data: False, "t": lambda data: b"t" in data}[keep_name]
    expected: list = []
    events, error = 0, None
    for row in rows:  # each record alone takes the record-by-record path
        try:
            records, counted = decode_frame(msgpack.packb(row, use_bin_type=True), 0, False)
        except FormatError as exc:
            error = exc.reason
            break
        events += counted
        expected += [r for r in records if keep is None or not isinstance(r, IoEvent)
                     or keep(r.data)]
    content = b"".join(msgpack.packb(row, use_bin_type=True) for row in rows)
    if error is not None:
        with pytest.raises(FormatError) as raised:
            decode_frame(content, 0, False, keep)
        assert raised.value.reason == error
    else:
        assert decode_frame(content, 0, False, keep) == (expected, events)


SEARCHES = [("ab", False, False), (r"a[\x00-\xff]{0,40}b", False, False), ("b+", False, False),
            ("x*", False, False), (r"\x9c", False, False), ("ab", True, False),
            ("AB", True, True), ("a.B", False, True)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=6).map(lambda b: bytes(b"abx\x9c"[c % 4] for c in b)),
                max_size=40),
       st.sampled_from(SEARCHES), st.integers(1, 5))
def test_searching_the_frame_keeps_what_testing_every_payload_keeps(payloads, search, chunk):
    """Payloads of a, b, x and a msgpack byte: matches that span the bytes between two
    payloads, or cover where a real one begins, must not hide it, whatever the chunk size."""
    source, fixed, ignore_case = search
    regex = compile_pattern(source, fixed, ignore_case)
    find = frame_finder(regex)
    assert find is not None
    content = b"".join(msgpack.packb(encode_record(event(i, data)), use_bin_type=True)
                       for i, data in enumerate(payloads))
    tally = [0]
    kept = [record.data for records in iter_frame(content, 0, False, payload_test(regex), tally,
                                                  chunk, find=find) for record in records]
    assert kept == [data for data in payloads if regex.search(data)]
    assert tally == [len(payloads)]


def test_a_match_across_two_payloads_at_a_chunk_edge_does_not_hide_the_second():
    # "a" ends the last record of the first chunk; the second chunk's first
    # payload "ab" matches, inside the frame match that began at that "a".
    regex = compile_pattern(r"a[\x00-\xff]{0,60}b")
    rows = [event(0, b"x"), event(1, b"a"), event(2, b"ab"), event(3, b"x")]
    content = b"".join(msgpack.packb(encode_record(r), use_bin_type=True) for r in rows)
    kept = [r.data for records in iter_frame(content, 0, False, payload_test(regex), [0], 2,
                                             find=frame_finder(regex)) for r in records]
    assert kept == [b"ab"]


def many_small_frames(path, frames: int) -> list[IoEvent]:
    """A capture of `frames` frames of 10 events each, every event numbered."""
    out = io.BytesIO()
    writer = CaptureWriter(out, make_header(format_minor=2))
    events = []
    for i in range(frames * 10):
        events.append(event(i, b"payload %d" % i))
        writer.write(events[-1])
        if i % 10 == 9:
            writer.flush()
    writer.close(End(BASE + frames * 10, len(events), sum(len(e.data) for e in events), 0))
    path.write_bytes(out.getvalue())
    return events


@pytest.mark.parametrize("parallel_max", [0, 4 << 20])
def test_frames_decompressed_in_parallel_arrive_in_order(tmp_path, monkeypatch, parallel_max):
    monkeypatch.setattr(reader_module, "DECOMPRESSORS", 2)
    monkeypatch.setattr(reader_module, "FRAMES_AHEAD", 4)
    monkeypatch.setattr(reader_module, "PARALLEL_FRAME_MAX", parallel_max)
    path = tmp_path / "frames.wtrace"
    events = many_small_frames(path, 60)
    with open(path, "rb") as stream:
        reader = CaptureReader(stream)
        got = [r for r in reader if isinstance(r, IoEvent)]
    assert got == events and reader.frames > 60 and not reader.truncated


def test_a_bad_frame_among_parallel_ones_fails_after_the_frames_before_it(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "DECOMPRESSORS", 2)
    path = tmp_path / "frames.wtrace"
    many_small_frames(path, 30)
    data = bytearray(path.read_bytes())
    with open(path, "rb") as stream:
        offsets = [offset for _content, offset, _searched in CaptureReader(stream)._iter_frames()]
    bad = offsets[15]
    data[bad + 12:bad + 20] = b"\xff" * 8  # inside the compressed blocks: zstd refuses it
    seen = []
    with pytest.raises(FormatError) as raised:
        for record in CaptureReader(io.BytesIO(bytes(data))):
            seen.append(record)
    assert raised.value.offset == bad
    assert len([r for r in seen if isinstance(r, IoEvent)]) == 10 * 14  # frames 1..14 (0: header)


@pytest.mark.parametrize(("parallel_max", "most"), [(0, 1), (4 << 20, 4)])
def test_after_a_big_frame_one_frame_at_most_is_read_ahead(tmp_path, monkeypatch,
                                                         parallel_max, most):
    monkeypatch.setattr(reader_module, "DECOMPRESSORS", 2)
    monkeypatch.setattr(reader_module, "FRAMES_AHEAD", 4)
    monkeypatch.setattr(reader_module, "PARALLEL_FRAME_MAX", parallel_max)
    path = tmp_path / "frames.wtrace"
    many_small_frames(path, 20)
    ahead: list[int] = []
    request, take = reader_module._ReadAhead.request, reader_module._ReadAhead.take
    outstanding = [0]

    def counted_request(self):
        outstanding[0] += 1
        request(self)

    def counted_take(self):
        ahead.append(outstanding[0])
        outstanding[0] -= 1
        return take(self)

    monkeypatch.setattr(reader_module._ReadAhead, "request", counted_request)
    monkeypatch.setattr(reader_module._ReadAhead, "take", counted_take)
    with open(path, "rb") as stream:
        list(CaptureReader(stream))
    assert max(ahead[1:]) == most


def test_only_the_chunks_where_a_match_begins_are_tested_payload_by_payload():
    regex = compile_pattern("NEEDLE")
    rows = [event(i, b"NEEDLE" if i in (30, 31, 77) else b"hay") for i in range(100)]
    content = b"".join(msgpack.packb(encode_record(r), use_bin_type=True) for r in rows)
    asked = []

    def keep(data):
        asked.append(data)
        return regex.search(data)

    kept = [r.seq for records in iter_frame(content, 0, False, keep, [0], 4,
                                            find=frame_finder(regex)) for r in records]
    assert kept == [30, 31, 77]
    assert len(asked) == 8  # the chunks of 4 holding 28-31 and 76-79


def needle_frames(path) -> list[IoEvent]:
    """60 frames of 10 events; a third of the frames hold "needle", at their start or end."""
    out = io.BytesIO()
    writer = CaptureWriter(out, make_header(format_minor=2))
    events = []
    for i in range(600):
        hit = (i // 10) % 3 == 0 and i % 10 in (0, 9)
        events.append(event(i, b"payload %d%s" % (i, b" needle" if hit else b"")))
        writer.write(events[-1])
        if i % 10 == 9:
            writer.flush()
    writer.close(End(BASE + 600, len(events), sum(len(e.data) for e in events), 0))
    path.write_bytes(out.getvalue())
    return events


@pytest.mark.parametrize("decompressors", [1, 2])
def test_the_decompressing_threads_search_finds_what_the_decoding_thread_finds(
        tmp_path, monkeypatch, decompressors):
    monkeypatch.setattr(reader_module, "DECOMPRESSORS", decompressors)
    path = tmp_path / "needles.wtrace"
    events = needle_frames(path)
    regex = compile_pattern("needle")
    find = frame_finder(regex)
    assert getattr(find, "releases_gil", False)  # the threads may search with it
    with open(path, "rb") as stream:
        reader = CaptureReader(stream, keep=payload_test(regex), find_in_frame=find)
        frames = [(content, searched) for content, _o, searched in reader._iter_frames()]
    assert len(frames) == 62  # the header's, 60 of events, the end's
    for content, searched in frames:
        if decompressors == 1:
            assert searched is None
        else:
            assert searched == (find, content.find(b"needle"))
    with open(path, "rb") as stream:
        kept = [r for r in CaptureReader(stream, keep=payload_test(regex), find_in_frame=find)
                if isinstance(r, IoEvent)]
    assert kept == [e for e in events if b"needle" in e.data] and len(kept) == 40


def test_a_search_changed_mid_capture_never_uses_the_old_ones_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "DECOMPRESSORS", 2)
    path = tmp_path / "needles.wtrace"
    events = needle_frames(path)
    needle, payload = compile_pattern("needle"), compile_pattern("payload 1")
    with open(path, "rb") as stream:
        reader = CaptureReader(stream, keep=payload_test(needle), find_in_frame=frame_finder(needle))
        kept = []
        for record in reader:  # frames ahead were searched for "needle" meanwhile
            if isinstance(record, IoEvent):
                kept.append(record)
                if len(kept) == 2:
                    reader.search_payloads(payload_test(payload), frame_finder(payload))
    # events 10-19: the next frame, already searched for "needle" (none there)
    later = [e for e in events if e.seq > kept[1].seq and b"payload 1" in e.data]
    assert kept[2:] == later and len(later) > 100
