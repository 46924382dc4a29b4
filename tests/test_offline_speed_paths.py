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
from wtrec.tools.grep import frame_prefilter, literal_of
from wtrec.tools.selection import compile_pattern
from wtrec.wtrace.codec import MAX_FRAME_OBJECTS, decode_frame, encode_record

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


def test_frame_prefilter_is_kept_for_patterns_that_look_around():
    for pattern in ("^a", "a$", r"\ba", r"\Ba", r"\Aa", r"a\Z", "(?=a)", "(?<!a)b", "(?m)a"):
        assert frame_prefilter(compile_pattern(pattern)) is None, pattern
    for pattern, fixed in (("abc", False), ("a.c", False), ("^a$", True), ("(x)", True)):
        assert frame_prefilter(compile_pattern(pattern, fixed)) is not None, pattern
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
