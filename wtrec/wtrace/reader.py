"""Reading a capture: a single-pass generator of typed records from any binary stream.

The input is hostile: frame sizes are checked before decompression
(wtrec.wtrace.framing) and every record field is checked (wtrec.wtrace.codec);
only FormatError and NewerFormatError leave. A capture cut short yields its
complete prefix and then says so (`truncated`, `warning`), it is not an error.
The next frame is read and decompressed in a second thread while the
current one is decoded, so a long capture reads at about zstd's speed.
"""

from __future__ import annotations

import queue
import struct
import threading
from collections.abc import Callable, Generator, Iterator
from typing import BinaryIO

from wtrec.errors import FormatError
from wtrec.records import End, Header, Record
from wtrec.wtrace.codec import iter_frame, no_events
from wtrec.wtrace.framing import (
    MAX_SKIPPABLE,
    ZSTD_MAGIC,
    ByteSource,
    Truncated,
    ZstdDecompressor,
    check_version,
    decompress_frame,
    is_skippable,
    new_decompressor,
    read_preamble,
    read_raw_frame,
)


class CaptureReader:
    """A single-pass iterator of typed records from a capture.

    With `keep`, only the events whose payload it accepts are handed on;
    with `frame_may_keep` too, a frame whose decompressed bytes it rejects
    hands on no event (so it may reject a frame only when `keep` would
    reject every payload in it). Skipped events are still checked and
    counted, and every other record is handed on.

    After iteration `truncated` says whether the capture ended early (cut
    inside a frame, or no end record); `warning` then holds the message.
    """

    def __init__(self, stream: BinaryIO, *, keep: Callable[[bytes], object] | None = None,
                 frame_may_keep: Callable[[bytes], object] | None = None):
        self._source = ByteSource(stream)
        self._seekable = is_seekable(stream)
        self._keep = keep
        self._frame_may_keep = frame_may_keep
        self.header: Header | None = None
        self.end: End | None = None
        self.events = 0
        self.frames = 0
        self.compressed_bytes = 0  # of the data frames read so far...
        self.content_bytes = 0  # ...and what they held
        self.truncated = False
        self.version: tuple[int, int] | None = None

    def search_payloads(self, keep: Callable[[bytes], object],
                        frame_may_keep: Callable[[bytes], object] | None) -> None:
        """`keep` and `frame_may_keep` as given to the constructor, from the next frame on."""
        self._keep = keep
        self._frame_may_keep = frame_may_keep

    @property
    def warning(self) -> str | None:
        if not self.truncated:
            return None
        return f"capture ends early after {self.events} events; was the recorder killed?"

    def __iter__(self) -> Iterator[Record]:
        frames = self._iter_frames()
        try:
            self.version = read_preamble(self._source)
            for content, offset in frames:
                keep = self._keep
                if self._frame_may_keep is not None and not self._frame_may_keep(content):
                    keep = no_events
                tally = [0]
                for chunk in iter_frame(content, offset, self.header is None, keep, tally):
                    self.events += tally[0]
                    tally[0] = 0
                    for record in chunk:
                        if isinstance(record, Header):
                            if self.header is not None:
                                raise FormatError("a second header record", offset)
                            check_version(record.format_major, record.format_minor)
                            self.header = record
                        elif isinstance(record, End):
                            self.end = record
                        yield record
                if self.end is not None:
                    return  # only the index follows; nothing in it is a record
        except Truncated:
            self.truncated = True
            return
        finally:
            frames.close()  # stops reading ahead, so the caller may rewind the stream
        if self.end is None:
            self.truncated = True

    def _iter_frames(self) -> Generator[tuple[bytes, int], None, None]:
        """Yields (decompressed content, offset) per zstd frame; skips skippables.

        The next frame is read and decompressed in another thread while the
        caller decodes this one (zstd releases the GIL), so a long capture
        is read at about the speed of decompression; at most two frames are
        held at a time. A problem with the next frame is raised only when
        it is asked for.
        """
        buffer = bytearray()
        decompressor = new_decompressor()
        ahead = _ReadAhead(lambda: self._next_frame(buffer, decompressor), self._seekable)
        try:
            ahead.request()
            while True:
                frame = ahead.take()
                if frame is None:
                    return
                ahead.request()
                content, start, size = frame
                self.frames += 1
                self.compressed_bytes += size
                self.content_bytes += len(content)
                yield content, start
        finally:
            ahead.close()

    def _next_frame(self, buffer: bytearray,
                    decompressor: ZstdDecompressor) -> tuple[bytes, int, int] | None:
        """(content, offset, compressed size) of the next zstd frame, or None at the end."""
        src = self._source
        while True:
            start = src.offset
            raw_magic = src.read_magic()
            if not raw_magic:
                return None
            magic, = struct.unpack("<I", raw_magic)
            if is_skippable(magic):
                size, = struct.unpack("<I", src.read(4))
                if size > MAX_SKIPPABLE:
                    raise FormatError(f"skippable frame of {size} bytes", start)
                src.read(size)
                continue
            if magic != ZSTD_MAGIC:
                raise FormatError(f"unknown frame magic 0x{magic:08x}", start)
            raw, content_size = read_raw_frame(src, raw_magic, start, buffer)
            with raw:
                content = decompress_frame(decompressor, raw, content_size, start)
            return content, start, src.offset - start


def is_seekable(stream: object) -> bool:
    """False for pipes, terminals and objects that cannot say: what arrives is all there is."""
    try:
        return bool(stream.seekable())  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        return False


class _ReadAhead:
    """Runs `produce` in a daemon thread, one call per request, results in order.

    A daemon thread, so a reader left blocked on a pipe never holds up the
    end of the program (`show --limit` on a live stream). On a seekable
    stream `close` waits for a read in progress, so the caller may rewind.
    """

    def __init__(self, produce: Callable[[], tuple[bytes, int, int] | None], wait: bool):
        self._wait = wait
        self._requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[object, BaseException | None]] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True,
                                        name="wtrace-read-ahead")
        self._thread.start()

    def _run(self, produce: Callable[[], tuple[bytes, int, int] | None]) -> None:
        while self._requests.get():
            try:
                self._results.put((produce(), None))
            except BaseException as exc:  # handed to the reading thread, raised there
                self._results.put((None, exc))
                return

    def request(self) -> None:
        self._requests.put(True)

    def take(self) -> tuple[bytes, int, int] | None:
        value, error = self._results.get()
        if error is not None:
            raise error
        return value  # type: ignore[return-value]

    def close(self) -> None:
        self._requests.put(False)
        if self._wait:
            self._thread.join()


def start_reading(stream: BinaryIO) -> tuple[CaptureReader, Iterator[Record], Header]:
    """A reader, its iterator past the header, and the header: how offline commands begin."""
    reader = CaptureReader(stream)
    records, header = start(reader)
    return reader, records, header


def start(reader: CaptureReader) -> tuple[Iterator[Record], Header]:
    """The reader's iterator past the header, and the header."""
    records = iter(reader)
    next(records, None)
    if reader.header is None:
        raise FormatError("the capture ends before its header record")
    return records, reader.header

