"""Hostile frames and encodings read alike by the checked pass and the general decoder.

Also memmem shared by threads, and the reader's threads against one thread.

Each test states what must hold whatever way a frame is read: the one-pass
msgspec decoding (checked_frames) and the general decoder agree on every
frame, errors stay FormatError, memory stays near what the general decoder
uses, and the reader's threads give the same answers as one thread.
"""

import io
import random
import re
import struct
import subprocess
import sys
import threading
import tracemalloc

import msgpack
import pytest
from conftest import build_capture, make_header, wtrec_cmd
from test_hostile import crafted

import wtrec
from wtrec.errors import FormatError
from wtrec.format import CaptureReader
from wtrec.records import FdIdentity, FdInfo, IoEvent
from wtrec.tools import byte_search
from wtrec.wtrace import codec, reader
from wtrec.wtrace.codec import iter_frame


def event(kind=2, ts=5, pid=7, tid=8, uid=0, comm=b"cat", fd=3, count=4, data=b"abcd",
          syscall="write", ret=4, seq=0):
    return [kind, ts, pid, tid, uid, comm, fd, count, data, syscall, ret, seq]


def packed(record) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def with_raw_field(index: int, raw: bytes) -> bytes:
    """An event record whose field `index` is the given msgpack bytes (any encoding)."""
    fields = [packed(value) for value in event()]
    fields[index] = raw
    return b"\x9c" + b"".join(fields)


def decoded(content, keep=None, find=None, chunk_records=codec.CHUNK_RECORDS):
    tally = [0]
    try:
        records = [r for chunk in iter_frame(content, 0, False, keep, tally, chunk_records,
                                             find=find) for r in chunk]
    except FormatError as exc:
        return "error", str(exc)
    return records, tally[0]


def general(content, keep=None, find=None, chunk_records=codec.CHUNK_RECORDS):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_decode_checked", lambda *_args: None)
        return decoded(content, keep, find, chunk_records)


# ------------------------------------------------------------ the two decoders agree

BAD_UTF8 = [b"\xa2\xff\xfe", b"\xa3\xed\xa0\x80", b"\xa2\xc0\xaf"]  # bad byte, surrogate, overlong


@pytest.mark.parametrize("raw", BAD_UTF8)
@pytest.mark.parametrize("record", [
    lambda s: with_raw_field(9, s),                                        # event syscall
    lambda s: b"\x98" + b"".join(map(packed, [6, 5, 7, 3])) + s + b"\xc0\xc0\xc0",  # fd kind
    lambda s: b"\x98" + b"".join(map(packed, [6, 5, 7, 3, "tcp"])) + s + b"\xc0\xc0",  # fd local
    lambda s: b"\x94" + b"".join(map(packed, [3, 1, 2])) + s,              # lost source
])
def test_invalid_utf8_in_a_text_field_is_the_general_decoders_format_error(record, raw):
    content = packed(event()) + record(raw) + packed(event(seq=1))
    assert decoded(content) == general(content)
    assert decoded(content)[0] == "error"


@pytest.mark.parametrize("raw_field", [
    (0, b"\xcf" + struct.pack(">Q", 2)), (0, b"\xcb" + struct.pack(">d", 2.0)),
    (1, b"\xcb" + struct.pack(">d", 5.0)), (1, b"\xca" + struct.pack(">f", 5.0)), (1, b"\xc3"),
    (1, b"\xcf" + b"\xff" * 8), (1, b"\xd3" + struct.pack(">q", -1)),
    (1, b"\xd3" + struct.pack(">q", 5)), (1, b"\xd6\xff\x00\x00\x00\x01"),
    (10, b"\xcf" + struct.pack(">Q", 1 << 63)), (10, b"\xd3" + struct.pack(">q", -(1 << 63))),
    (6, b"\xce" + struct.pack(">I", 1 << 31)), (6, b"\xd3" + struct.pack(">q", -(1 << 31) - 1)),
    (2, b"\xcf" + struct.pack(">Q", 1 << 32)), (5, b"\xd9\x03cat"), (8, b"\xc6\x00\x00\x00\x04abcd"),
    (8, packed("abcd")), (8, packed([97, 98])), (8, b"\xd6\x01abcd"), (8, b"\xd4\x01\x00"),
    (9, packed(b"write")), (9, b"\xda\x00\x05write"), (9, b"\xa1\x00"), (9, b"\xa0"), (9, b"\xc0"),
])
def test_odd_encodings_of_a_field_read_as_the_general_decoder_reads_them(raw_field):
    content = packed(event()) + with_raw_field(*raw_field) + packed(event(seq=1))
    assert decoded(content) == general(content)


@pytest.mark.parametrize("tail", [
    b"\xdc\x00\x0c" + b"".join(map(packed, event())), packed({2: 1}),
    packed(dict(zip("abcdefghijkl", event(), strict=True))), b"\x91" * 2000 + b"\xc0", b"\xc1",
    b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\x9c",
    packed([2] + [0] * 5000), b"", b"\xc0",
])
def test_odd_frames_read_as_the_general_decoder_reads_them(tail):
    content = packed(event()) + tail
    assert decoded(content) == general(content)


@pytest.mark.parametrize("count", [16384, 16385])
def test_frames_at_the_record_bound_read_alike(count):
    content = packed(event(data=b"")) * count
    assert decoded(content, chunk_records=128) == general(content, chunk_records=128)


def test_mutated_frames_read_alike_every_way():
    rnd = random.Random(1)
    for _ in range(300):
        records = [event(kind=rnd.choice([2, 5]), seq=rnd.randrange(1 << 64),
                         data=bytes(rnd.choice(b"ab\x00") for _ in range(rnd.randrange(6))))
                   if rnd.random() < .7 else rnd.choice([[6, 5, 7, 3, "tcp", None, None, "/p"],
                                                         [3, 1, 2, "ringbuf"], [4, 1, 2, 3, 4]])
                   for _ in range(rnd.randrange(1, 30))]
        content = bytearray(b"".join(map(packed, records)))
        for _ in range(rnd.randrange(1, 3)):
            content[rnd.randrange(len(content))] = rnd.randrange(256)
        needle = rnd.choice([b"a", b"b\x00", b"ab"])
        find = byte_search.finder(needle)

        def keep(data, needle=needle):
            return needle in data

        for chunk_records in (128, 1, 3):
            for search in ((None, None), (keep, find)):
                assert (decoded(bytes(content), *search, chunk_records=chunk_records)
                        == general(bytes(content), *search, chunk_records=chunk_records))


# ------------------------------------------------------------------- the command line

def test_show_and_grep_of_invalid_utf8_say_format_error_in_one_line(tmp_path):
    bad = with_raw_field(9, b"\xa2\xff\xfe")
    path = tmp_path / "bad.wtrace"
    path.write_bytes(crafted(packed(event()) + bad))
    for args, code in ((["show"], 10), (["grep", "abcd"], 2), (["recover"], 10)):
        extra = ["-o", str(tmp_path / "out.wtrace")] if args == ["recover"] else []
        done = subprocess.run(wtrec_cmd(*args, str(path), *extra), capture_output=True)
        assert b"internal error" not in done.stderr, (args, done.stderr)
        if args != ["recover"]:  # recover salvages the whole records and may succeed
            assert done.returncode == code, (args, done.stderr)
            assert done.stderr.startswith(b"wtrec: ") and done.stderr.count(b"\n") == 1


# ------------------------------------------------------------------------------ memory

def peak_extra(content, monkeypatch=None) -> int:
    tracemalloc.start()
    try:
        for _chunk in iter_frame(content, 0, False, None, [0]):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_big_frame_of_common_records_costs_about_what_the_general_decoder_costs():
    records = [event(data=b"x" * 4000, seq=i) for i in range(6000)]  # about 23 MiB
    content = b"".join(map(packed, records))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "_decode_checked", lambda *_args: None)
        slow = peak_extra(content)
    fast = peak_extra(content)
    assert fast < slow + (8 << 20), (fast >> 20, slow >> 20)


# ------------------------------------------------------------------------ the reader

def many_frames() -> bytes:
    rnd = random.Random(3)
    records = []
    for i in range(5000):
        if i % 700 == 0:
            records.append(FdInfo(10**9 + i, 10, 3, FdIdentity("tcp", "a", "b")))
        data = bytes(rnd.choice(b"xyz") for _ in range(rnd.choice([0, 2, 30])))
        if i % 128 in (0, 127):
            data = b"NEEDLE" + data
        records.append(IoEvent(10**9 + i, 10, 10, 0, b"app", 3, len(data), data,
                               syscall="write", ret=len(data), seq=i))
    return build_capture(records, header=make_header(format_minor=3))


class _Pipe(io.RawIOBase):
    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        return self._data.readinto(buffer)


@pytest.mark.parametrize("pattern", [b"NEEDLE", b"xyzx", re.compile(b"needle", re.I),
                                     re.compile(b"NEED.E")])
def test_one_or_two_decompressors_and_file_or_pipe_find_the_same(pattern, monkeypatch, tmp_path):
    data = many_frames()
    path = tmp_path / "c.wtrace"
    path.write_bytes(data)
    answers = set()
    for threads in (1, 2):
        monkeypatch.setattr(reader, "DECOMPRESSORS", threads)
        monkeypatch.setattr(reader, "FRAMES_AHEAD", 2 * threads)
        for source in (str(path), io.BufferedReader(_Pipe(data))):
            with wtrec.open(source) as capture:
                answers.add((tuple(e.seq for e in capture.events(payload=pattern)),
                             capture.event_count))
    assert len(answers) == 1


def test_a_finder_changed_mid_stream_applies_from_the_next_frame(monkeypatch):
    monkeypatch.setattr(reader, "DECOMPRESSORS", 2)
    records = [IoEvent(10**9 + i, 10, 10, 0, b"a", 3, 3, b"AAA" if i % 2 else b"BBB",
                       syscall="write", ret=3, seq=i) for i in range(6000)]
    data = build_capture(records, header=make_header(format_minor=3))
    capture_reader = CaptureReader(io.BytesIO(data), keep=lambda d: b"AAA" in d,
                                   find_in_frame=byte_search.finder(b"AAA"))
    seen = []
    for record in capture_reader:
        if isinstance(record, IoEvent):
            seen.append(record.seq)
            if len(seen) == 100:
                capture_reader.search_payloads(lambda d: b"BBB" in d, byte_search.finder(b"BBB"))
    odd = [s for s in seen if s % 2]
    even = [s for s in seen if s % 2 == 0]
    assert odd == list(range(1, 1024, 2))  # the rest of the first frame (1024 records)
    assert even == list(range(1024, 6000, 2))


def test_memmem_shared_by_threads_answers_as_bytes_find():
    find = byte_search.finder(b"needle")
    wrong = []

    def work(seed):
        rnd = random.Random(seed)
        for _ in range(3000):
            haystack = rnd.randbytes(rnd.randrange(300))
            at = rnd.randrange(len(haystack) + 1)
            if rnd.random() < .5:
                haystack = haystack[:at] + b"needle" + haystack[at:]
            start = rnd.randrange(-10, len(haystack) + 10)
            if find(haystack, start) != haystack.find(b"needle", start):
                wrong.append((haystack, start))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
