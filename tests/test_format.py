"""The .wtrace format: round trips, damage, versions, bounds, stock tools."""

import io
import shutil
import struct
import subprocess
import sys

import msgpack
import pytest
import zstandard
from conftest import build_capture, make_header, sample_records
from hypothesis import given, settings
from hypothesis import strategies as st

from wtrec.errors import FormatError, NewerFormatError
from wtrec.format import CaptureReader, CaptureWriter, encode_preamble, read_index
from wtrec.records import End, Header, IoEvent
from wtrec.wtrace.framing import PREAMBLE_MAGIC
from wtrec.wtrace.writer import FRAME_MAX_AGE_NS, FRAME_MAX_RECORDS


def read_all(data: bytes) -> tuple[list, CaptureReader]:
    reader = CaptureReader(io.BytesIO(data))
    return list(reader), reader


def frame(records: list, checksum=True) -> bytes:
    packed = b"".join(msgpack.packb(r, use_bin_type=True) for r in records)
    return zstandard.ZstdCompressor(write_checksum=checksum).compress(packed)


def raw_header_list(major=1, minor=0) -> list:
    return [1, major, minor, "9.9", "h", "k", 1, 2, 3, ["wtrec"], {"comms": ["x"]}, 4096, "ringbuf"]


def test_round_trip_keeps_every_record():
    data = build_capture()
    records, reader = read_all(data)
    assert records[0] == make_header()
    assert records[1:-1] == sample_records()
    assert isinstance(records[-1], End) and records[-1].events == 4
    assert not reader.truncated and reader.warning is None


def test_frames_close_at_the_record_limit():
    events = [IoEvent(i, 1, 1, 0, b"c", 3, 1, b"x") for i in range(FRAME_MAX_RECORDS * 2 + 5)]
    records, reader = read_all(build_capture(events))
    assert [r for r in records if isinstance(r, IoEvent)] == events
    assert reader.frames == 4  # header frame, two full frames, the rest with the end


@pytest.mark.parametrize("background", [False, True], ids=["inline", "background"])
def test_frames_close_after_half_a_second(background):
    now = [0]
    out = io.BytesIO()
    writer = CaptureWriter(out, make_header(), clock=lambda: now[0], background=background)
    writer.write(IoEvent(1, 1, 1, 0, b"c", 3, 1, b"x"))
    size_before = len(out.getvalue())
    now[0] = FRAME_MAX_AGE_NS - 1
    writer.tick()
    writer.sync()
    assert len(out.getvalue()) == size_before  # still open
    now[0] = FRAME_MAX_AGE_NS
    writer.tick()
    writer.sync()
    assert len(out.getvalue()) > size_before
    records, reader = read_all(out.getvalue())
    assert len(records) == 2 and reader.truncated  # no end record yet: recorder "killed"


def test_every_cut_yields_the_complete_prefix_and_a_warning():
    data = build_capture()
    full, _ = read_all(data)
    index_at = read_index(io.BytesIO(data))[0].offset
    for cut in range(1, len(data)):
        records, reader = read_all(data[:cut])
        assert records == full[:len(records)], cut
        if cut < index_at:
            assert reader.truncated, cut
            assert reader.warning == (
                f"capture ends early after {reader.events} events; was the recorder killed?")
        else:  # only the index is cut: every record is there
            assert records == full and not reader.truncated, cut


def test_the_empty_input_is_a_format_error():
    with pytest.raises(FormatError, match="at byte 0"):
        read_all(b"")


def test_flipped_bytes_give_the_format_error_or_a_warning_never_wrong_data():
    data = build_capture(index=False)
    full, _ = read_all(data)
    errors = 0
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x55
        try:
            records, reader = read_all(bytes(damaged))
        except (FormatError, NewerFormatError):
            errors += 1
            continue
        # Surviving a flip means it hit a byte that carries no record data
        # (the preamble's minor version) or it looked like a cut: either way
        # what came out is the true capture or a true prefix of it, and a
        # prefix is announced.
        assert records == full[:len(records)], offset
        assert records == full or reader.truncated, offset
    assert errors > len(data) * 0.9


def test_a_damaged_index_is_never_trusted_and_never_breaks_reading():
    data = build_capture()
    full, _ = read_all(data)
    index_at = read_index(io.BytesIO(data))[0].offset
    for offset in range(index_at, len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x55
        index, why = read_index(io.BytesIO(bytes(damaged)))
        assert index is None and why, offset
        assert read_all(bytes(damaged))[0] == full, offset


def test_format_error_names_the_frame_offset():
    data = bytearray(build_capture(index=False))
    second_frame = data.index(b"\x28\xb5\x2f\xfd", 20)
    data[-6] ^= 0xFF  # inside the last frame's checksum
    with pytest.raises(FormatError) as caught:
        read_all(bytes(data))
    assert caught.value.offset is not None and caught.value.offset >= second_frame
    assert f"at byte {caught.value.offset}" in str(caught.value)


def test_unknown_record_types_and_extra_fields_are_tolerated():
    event = [2, 5, 1, 1, 0, b"c", 3, 2, b"hi", "a field from the future", 42]
    # Fields 13 (provenance, 1.2) and 14 (series, 1.3) are known; 15 is from the future.
    data = (encode_preamble() + frame([raw_header_list() + [[], None, "extra"]])
            + frame([[99, "new kind of record"], event, [4, 9, 1, 2, 0, "extra"]]))
    records, reader = read_all(data)
    assert [type(r) for r in records] == [Header, IoEvent, End]
    assert records[1].data == b"hi" and not reader.truncated


def test_a_newer_major_is_refused_in_the_preamble():
    data = encode_preamble(major=2, minor=3) + frame([raw_header_list(2, 3)])
    with pytest.raises(NewerFormatError, match="format 2.3.*newer wtrec"):
        read_all(data)


def test_a_newer_major_is_refused_in_the_header():
    data = encode_preamble() + frame([raw_header_list(major=3)])
    with pytest.raises(NewerFormatError):
        read_all(data)


def test_a_newer_minor_is_read():
    data = encode_preamble(minor=9) + frame([raw_header_list(minor=9), [4, 1, 0, 0, 0]])
    records, reader = read_all(data)
    assert records[0].format_minor == 9 and not reader.truncated


def test_a_frame_declaring_a_tebibyte_is_rejected_without_allocating():
    # Frame header: magic, descriptor (8-byte content size, single segment), size.
    huge = struct.pack("<IB", 0xFD2FB528, 0b11100000) + struct.pack("<Q", 1 << 40)
    data = encode_preamble() + frame([raw_header_list()]) + huge + b"\x01\x00\x00"
    with pytest.raises(FormatError, match="declares 1099511627776 bytes"):
        read_all(data)


def test_a_frame_without_content_size_is_rejected():
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    chunker = cctx.compressobj()
    body = chunker.compress(msgpack.packb(raw_header_list())) + chunker.flush()
    with pytest.raises(FormatError, match="content size"):
        read_all(encode_preamble() + body)


@pytest.mark.parametrize("record, what", [
    ([2, 5, 1, 1, 0, "not bytes", 3, 2, b"hi"], "comm"),
    ([2, -5, 1, 1, 0, b"c", 3, 2, b"hi"], "time"),
    ([2, 5, 1, 1, 0, b"c", 3, 2], "data"),
    ([2, True, 1, 1, 0, b"c", 3, 2, b"hi"], "time"),
    ("not an array", "array"),
    ([], "array"),
    (["header?"], "integer"),
])
def test_mistyped_fields_are_format_errors(record, what):
    data = encode_preamble() + frame([raw_header_list(), record])
    with pytest.raises(FormatError, match=what):
        read_all(data)


def test_a_record_split_across_frames_is_corruption():
    packed = msgpack.packb([2, 5, 1, 1, 0, b"c", 3, 2, b"hi"], use_bin_type=True)
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    data = (encode_preamble() + frame([raw_header_list()]) + cctx.compress(packed[:4])
            + cctx.compress(packed[4:]))
    with pytest.raises(FormatError, match="inside a msgpack record"):
        read_all(data)


def test_the_first_record_must_be_a_header():
    with pytest.raises(FormatError, match="header"):
        read_all(encode_preamble() + frame([[4, 1, 0, 0, 0]]))


def test_a_file_that_is_not_a_capture_is_named_as_such():
    with pytest.raises(FormatError, match="no wtrace preamble"):
        read_all(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(FormatError, match="no wtrace preamble"):
        read_all(frame([raw_header_list()]))


def test_skippable_frames_after_the_preamble_are_skipped():
    skippable = struct.pack("<II", PREAMBLE_MAGIC - 1, 5) + b"index"
    data = encode_preamble() + frame([raw_header_list()]) + skippable + frame([[4, 1, 0, 0, 0]])
    records, reader = read_all(data)
    assert len(records) == 2 and not reader.truncated


@pytest.mark.skipif(not shutil.which("zstdcat"), reason="zstd CLI not installed")
def test_zstdcat_and_plain_msgpack_read_a_capture(tmp_path):
    path = tmp_path / "c.wtrace"
    path.write_bytes(build_capture())
    script = ("import msgpack, sys; u = msgpack.Unpacker(sys.stdin.buffer, raw=False); "
              "print([r[0] for r in u]); ")
    result = subprocess.run(f"zstdcat {path} | {sys.executable} -c '{script}'", shell=True,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[1, 6, 2, 2, 3, 6, 2, 6, 5, 4]"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_give_only_format_errors(blob):
    for data in (blob, encode_preamble() + blob):
        try:
            read_all(data)
        except (FormatError, NewerFormatError):
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(msgpack_values, max_size=12), max_size=5), st.booleans())
def test_valid_frames_with_random_msgpack_give_only_format_errors(records, with_header):
    prefix = [raw_header_list()] if with_header else []
    records = prefix + records
    data = encode_preamble() + frame(records)
    try:
        read_all(data)
    except (FormatError, NewerFormatError):
        pass


def test_a_generic_seekable_zstd_reader_seeks_in_a_capture(tmp_path):
    """The seek table makes a capture a valid zstd seekable-format file."""
    import pyzstd

    events = [IoEvent(i, 1, 1, 0, b"c", 3, 400, b"%05d" % i * 80) for i in range(5000)]
    path = tmp_path / "seek.wtrace"
    path.write_bytes(build_capture(events))
    if not shutil.which("zstd"):
        pytest.fail("the zstd command is missing (scripts/bootstrap installs it)")
    content = subprocess.run(["zstd", "-dcq", str(path)], capture_output=True, check=True).stdout
    with open(path, "rb") as f:
        index = read_index(f)[0]
        expected = b""
        for frame in index.frames:
            f.seek(frame.offset)
            expected += zstandard.ZstdDecompressor().decompress(f.read(frame.size))
    assert content == expected
    with pyzstd.SeekableZstdFile(str(path), "r") as seekable:
        frames, _, size = seekable.seek_table_info
        assert frames == len(index.frames) + 2 and size == len(expected)  # + preamble, index
        middle = len(expected) // 2 + 13
        seekable.seek(middle)
        assert seekable.read(1000) == expected[middle:middle + 1000]
        seekable.seek(0)
        assert seekable.read() == expected
