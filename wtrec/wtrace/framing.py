"""zstd framing of a capture: magic numbers, the preamble, frame headers, bounded reads.

A capture is a skippable frame (the preamble), zstd frames of records, and
trailing skippable frames (index, seek table). This module is the one place
that knows those byte layouts; docs/FORMAT.md is their specification. Sizes
a frame declares are checked against bounds before anything is allocated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

import zstandard
from zstandard import ZstdDecompressor

from wtrec.errors import FormatError, NewerFormatError
from wtrec.records import FORMAT_MAJOR, FORMAT_MINOR

PREAMBLE_MAGIC = 0x184D2A5E  # a zstd skippable-frame magic (0x184D2A5?)
PREAMBLE_TAG = b"WTRACE"
INDEX_MAGIC = 0x184D2A5D  # the index frame; the preamble uses ...5E
SEEK_TABLE_MAGIC = 0x184D2A5E  # zstd's seekable format names this one
SEEKABLE_MAGIC = 0x8F92EAB1  # the seek table's footer
ZSTD_MAGIC = 0xFD2FB528
ZSTD_MAGIC_BYTES = struct.pack("<I", ZSTD_MAGIC)
SKIPPABLE_MASK = 0xFFFFFFF0
SKIPPABLE_BASE = 0x184D2A50

# Bounds the reader enforces before allocating anything.
MAX_FRAME_CONTENT = 64 << 20  # decompressed bytes in one zstd frame
MAX_SKIPPABLE = 64 << 20  # bytes in one skippable frame
MAX_BLOCK = 128 << 10  # zstd's Block_Maximum_Size


def is_skippable(magic: int) -> bool:
    return magic & SKIPPABLE_MASK == SKIPPABLE_BASE


def encode_preamble(major: int = FORMAT_MAJOR, minor: int = FORMAT_MINOR) -> bytes:
    """The 16-byte skippable frame every capture starts with."""
    payload = PREAMBLE_TAG + bytes([major, minor])
    return struct.pack("<II", PREAMBLE_MAGIC, len(payload)) + payload


def check_version(major: int, minor: int) -> None:
    """Refuses a newer major version (NewerFormatError) and versions that never existed."""
    if major > FORMAT_MAJOR:
        raise NewerFormatError(major, minor, FORMAT_MAJOR)
    if major < 1:
        raise FormatError(f"format version {major}.{minor} does not exist")


@dataclass(frozen=True)
class FrameHeader:
    """What a zstd frame header says: its length and the content size it declares."""

    size: int  # bytes from the magic to the first block header
    content_size: int | None  # None when the frame does not declare it
    has_checksum: bool
    reserved_bit: bool
    needs_dictionary: bool


def _content_size_bytes(descriptor: int) -> int:
    single = (descriptor >> 5) & 1
    return {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[descriptor >> 6]


def frame_header_size(descriptor: int) -> int:
    """Bytes from a zstd frame's magic to its first block, from its descriptor byte."""
    single = (descriptor >> 5) & 1
    return 5 + (0 if single else 1) + _content_size_bytes(descriptor)


def parse_frame_header(head: bytes) -> FrameHeader | None:
    """The header of the zstd frame `head` starts with; None if `head` is too short.

    `head` starts at the frame's magic; 18 bytes always suffice.
    """
    if len(head) < 5 or len(head) < frame_header_size(head[4]):
        return None
    d = head[4]
    fcs_size = _content_size_bytes(d)
    start = 5 + (0 if (d >> 5) & 1 else 1)
    content: int | None = None
    if fcs_size:
        content = int.from_bytes(head[start:start + fcs_size], "little")
        content += 256 if fcs_size == 2 else 0
    return FrameHeader(size=start + fcs_size, content_size=content,
                       has_checksum=bool((d >> 2) & 1), reserved_bit=bool((d >> 3) & 1),
                       needs_dictionary=bool(d & 3))


class Truncated(Exception):
    """The input ended inside a frame (not a FormatError: a cut file is expected)."""


class Readable(Protocol):
    """A file, a pipe or an mmap: anything with read(n)."""

    def read(self, size: int, /) -> bytes: ...


class ByteSource:
    """Reads exact byte counts from a stream and keeps the offset."""

    def __init__(self, stream: Readable):
        self._stream = stream
        self.offset = 0

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes, or Truncated if the input ends first."""
        parts = []
        need = size
        while need:
            chunk = self._stream.read(min(need, 1 << 20))
            if not chunk:
                raise Truncated()
            parts.append(chunk)
            need -= len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.offset += size
        return data

    def read_into(self, buffer: bytearray, at: int, size: int) -> None:
        """Exactly `size` bytes into buffer[at:at + size] (grown as needed), or Truncated."""
        if len(buffer) < at + size:
            buffer.extend(bytes(at + size - len(buffer)))
        need, position = size, at
        readinto = getattr(self._stream, "readinto", None)
        with memoryview(buffer) as view:
            while need:
                if readinto is not None:
                    with view[position:position + min(need, 1 << 20)] as window:
                        got = readinto(window)
                else:
                    chunk = self._stream.read(min(need, 1 << 20))
                    got = len(chunk)
                    view[position:position + got] = chunk
                if not got:
                    raise Truncated()
                need -= got
                position += got
        self.offset += size

    def read_magic(self) -> bytes:
        """Four bytes, or b'' at a clean end of input."""
        first = self._stream.read(1)
        if not first:
            return b""
        self.offset += 1
        return first + self.read(3)


def read_preamble(src: ByteSource) -> tuple[int, int]:
    """Reads and checks the preamble; returns the (major, minor) version it names."""
    first = src.read_magic()
    if not first:
        raise FormatError("empty input, not a wtrace capture", 0)
    magic, = struct.unpack("<I", first)
    if magic != PREAMBLE_MAGIC:
        raise FormatError("no wtrace preamble; is this a .wtrace file?", 0)
    size, = struct.unpack("<I", src.read(4))
    if size < len(PREAMBLE_TAG) + 2 or size > MAX_SKIPPABLE:
        raise FormatError(f"preamble of {size} bytes", 4)
    payload = src.read(size)
    if payload[:len(PREAMBLE_TAG)] != PREAMBLE_TAG:
        raise FormatError("no WTRACE tag in the preamble", 8)
    major, minor = payload[len(PREAMBLE_TAG)], payload[len(PREAMBLE_TAG) + 1]
    check_version(major, minor)
    return major, minor


def read_zstd_frame(src: ByteSource, raw_magic: bytes, start: int) -> bytes:
    """The content of the zstd frame whose magic was just read, sizes checked first."""
    raw, content_size = read_raw_frame(src, raw_magic, start)
    with raw:
        return decompress_frame(zstandard.ZstdDecompressor(), raw, content_size, start)


def read_raw_frame(src: ByteSource, raw_magic: bytes, start: int,
                   buffer: bytearray | None = None) -> tuple[memoryview, int]:
    """The compressed bytes of the zstd frame whose magic was just read, and its content size.

    Every size is checked against its bound before anything is allocated.
    The bytes are read into `buffer` (reused from frame to frame, so big
    reads do not fault in fresh pages each time); the view is valid until
    the buffer's next use.
    """
    buffer = bytearray() if buffer is None else buffer
    first = src.read(1)
    rest = src.read(frame_header_size(first[0]) - 5)
    frame = parse_frame_header(raw_magic + first + rest)
    if frame is None:  # cannot happen: the whole header was just read
        raise FormatError("zstd frame header cut short", start)
    if frame.reserved_bit:
        raise FormatError("zstd frame header has the reserved bit set", start + 4)
    if frame.needs_dictionary:
        raise FormatError("zstd frame needs a dictionary", start + 4)
    content_size = frame.content_size
    if content_size is None:
        raise FormatError("zstd frame does not declare its content size", start)
    if content_size > MAX_FRAME_CONTENT:
        raise FormatError(
            f"zstd frame declares {content_size} bytes, over the {MAX_FRAME_CONTENT} limit",
            start)
    head = raw_magic + first + rest
    used = len(head)
    if len(buffer) < used:
        buffer.extend(bytes(used - len(buffer)))
    buffer[:used] = head
    budget = 2 * content_size + 1024  # compressed blocks are never much larger
    while True:
        src.read_into(buffer, used, 3)
        value = int.from_bytes(buffer[used:used + 3], "little")
        used += 3
        last, block_type, block_size = value & 1, (value >> 1) & 3, value >> 3
        if block_type == 3:
            raise FormatError("zstd block of reserved type", src.offset - 3)
        if block_size > MAX_BLOCK:
            raise FormatError(f"zstd block of {block_size} bytes", src.offset - 3)
        body = 1 if block_type == 1 else block_size
        budget -= body + 3
        if budget < 0:
            raise FormatError("zstd frame larger than its content allows", start)
        src.read_into(buffer, used, body)
        used += body
        if last:
            break
    if frame.has_checksum:
        src.read_into(buffer, used, 4)
        used += 4
    return memoryview(buffer)[:used], content_size


def new_decompressor() -> ZstdDecompressor:
    """One per thread; reusing it spares setting up a window per frame."""
    return zstandard.ZstdDecompressor()


def decompress_frame(decompressor: ZstdDecompressor, raw: memoryview | bytes,
                     content_size: int, start: int) -> bytes:
    """A frame read by read_raw_frame, decompressed (zstd releases the GIL meanwhile)."""
    try:
        content = decompressor.decompress(raw)
    except zstandard.ZstdError as exc:
        raise FormatError(f"zstd frame does not decode ({exc})", start) from None
    if len(content) != content_size:
        raise FormatError("zstd frame content differs from its declared size", start)
    return content
