"""Reading a capture: a single-pass generator of typed records from any binary stream.

The input is hostile: frame sizes are checked before decompression
(wtrec.wtrace.framing) and every record field is checked (wtrec.wtrace.codec);
only FormatError and NewerFormatError leave. A capture cut short yields its
complete prefix and then says so (`truncated`, `warning`), it is not an error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from wtrec.errors import FormatError
from wtrec.records import End, Header, IoEvent, Record
from wtrec.wtrace.codec import decode_records
from wtrec.wtrace.framing import (
    MAX_SKIPPABLE,
    ZSTD_MAGIC,
    ByteSource,
    Truncated,
    check_version,
    is_skippable,
    read_preamble,
    read_zstd_frame,
)


class CaptureReader:
    """A single-pass iterator of typed records from a capture.

    After iteration `truncated` says whether the capture ended early (cut
    inside a frame, or no end record); `warning` then holds the message.
    """

    def __init__(self, stream: BinaryIO):
        self._source = ByteSource(stream)
        self.header: Header | None = None
        self.end: End | None = None
        self.events = 0
        self.frames = 0
        self.compressed_bytes = 0  # of the data frames read so far...
        self.content_bytes = 0  # ...and what they held
        self.truncated = False
        self.version: tuple[int, int] | None = None

    @property
    def warning(self) -> str | None:
        if not self.truncated:
            return None
        return f"capture ends early after {self.events} events; was the recorder killed?"

    def __iter__(self) -> Iterator[Record]:
        try:
            self.version = read_preamble(self._source)
            for content, offset in self._iter_frames():
                for record in decode_records(content, offset, self.header is None):
                    if isinstance(record, Header):
                        if self.header is not None:
                            raise FormatError("a second header record", offset)
                        check_version(record.format_major, record.format_minor)
                        self.header = record
                    elif isinstance(record, IoEvent):
                        self.events += 1
                    elif isinstance(record, End):
                        self.end = record
                    yield record
                if self.end is not None:
                    return  # only the index follows; nothing in it is a record
        except Truncated:
            self.truncated = True
            return
        if self.end is None:
            self.truncated = True

    def _iter_frames(self) -> Iterator[tuple[bytes, int]]:
        """Yields (decompressed content, offset) per zstd frame; skips skippables."""
        src = self._source
        while True:
            start = src.offset
            raw_magic = src.read_magic()
            if not raw_magic:
                return
            magic, = struct.unpack("<I", raw_magic)
            if is_skippable(magic):
                size, = struct.unpack("<I", src.read(4))
                if size > MAX_SKIPPABLE:
                    raise FormatError(f"skippable frame of {size} bytes", start)
                src.read(size)
                continue
            if magic != ZSTD_MAGIC:
                raise FormatError(f"unknown frame magic 0x{magic:08x}", start)
            content = read_zstd_frame(src, raw_magic, start)
            self.frames += 1
            self.compressed_bytes += src.offset - start
            self.content_bytes += len(content)
            yield content, start


def start_reading(stream: BinaryIO) -> tuple[CaptureReader, Iterator[Record], Header]:
    """A reader, its iterator past the header, and the header: how offline commands begin."""
    reader = CaptureReader(stream)
    records = iter(reader)
    next(records, None)
    if reader.header is None:
        raise FormatError("the capture ends before its header record")
    return reader, records, reader.header

