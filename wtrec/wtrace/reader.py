"""Reading a capture: a single-pass generator of typed records from any binary stream.

The input is hostile: frame sizes are checked before decompression
(wtrec.wtrace.framing) and every record field is checked (wtrec.wtrace.codec);
only FormatError and NewerFormatError leave. A capture cut short yields its
complete prefix and then says so (`truncated`, `warning`), it is not an error.
The next frames are read in a second thread and decompressed by two more
while the current one is decoded, so a long capture reads about as fast
as the machine's cores decompress it.
"""

from __future__ import annotations

import os
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

# Frames decompressed at once, each in its own thread, beside the decoding one
# (about what `zstdcat | grep` gets from two processes); one is no parallelism.
DECOMPRESSORS = min(2, os.cpu_count() or 1)
# Small frames asked for ahead of the one being decoded: two per decompressing
# thread, so each has the next frame queued when it finishes one (with one
# each, the threads waited on the decoding one: 0.42 s against 0.37 s for
# grep on 271 MB of 4 KiB events).
FRAMES_AHEAD = 2 * DECOMPRESSORS
# Only frames this small go ahead in parallel (the writer's are at most about
# 1 MiB), so a crafted file of big frames holds no more than two at a time.
PARALLEL_FRAME_MAX = 4 << 20

# (content, or its decompression under way; offset; compressed size) of a frame
FrameRead = tuple["bytes | _Pending", int, int]
# (the finder a frame was searched with, where it first matches or -1)
Searched = tuple[Callable[[bytes, int], int], int]
# a frame to decompress: (compressed bytes, content size, offset, finder or None)
_FrameJob = tuple[bytes, int, int, "Callable[[bytes, int], int] | None"]
# ((content, searched), None) or (None, the problem)
_FrameAnswer = tuple["tuple[bytes, Searched | None] | None", "BaseException | None"]


class CaptureReader:
    """A single-pass iterator of typed records from a capture.

    With `keep`, only the events whose payload it accepts are handed on;
    with `find_in_frame` too (find(frame, start): where the first place a
    payload after `start` may match begins, or -1; see codec.iter_frame),
    `keep` is asked only of the events near such places. Skipped events
    are still checked and counted, and every other record is handed on.

    After iteration `truncated` says whether the capture ended early (cut
    inside a frame, or no end record); `warning` then holds the message.
    """

    def __init__(self, stream: BinaryIO, *, keep: Callable[[bytes], object] | None = None,
                 find_in_frame: Callable[[bytes, int], int] | None = None):
        self._source = ByteSource(stream)
        self._seekable = is_seekable(stream)
        # the file descriptor of a file read from its start: where its index is read
        self._index_fd = _file_descriptor(stream) if self._seekable else None
        self._keep = keep
        self._find_in_frame = find_in_frame
        self.header: Header | None = None
        self.end: End | None = None
        self.events = 0
        self.frames = 0
        self.compressed_bytes = 0  # of the data frames read so far...
        self.content_bytes = 0  # ...and what they held
        self.truncated = False
        self.version: tuple[int, int] | None = None

    def search_payloads(self, keep: Callable[[bytes], object],
                        find_in_frame: Callable[[bytes, int], int] | None) -> None:
        """`keep` and `find_in_frame` as given to the constructor, from the next frame on."""
        self._keep = keep
        self._find_in_frame = find_in_frame

    @property
    def warning(self) -> str | None:
        if not self.truncated:
            return None
        return f"capture ends early after {self.events} events; was the recorder killed?"

    def __iter__(self) -> Iterator[Record]:
        record_counts: dict[int, int] | None = None  # read with the first frame of records
        frames = self._iter_frames()
        try:
            self.version = read_preamble(self._source)
            for content, offset, searched in frames:
                tally = [0]
                find = self._find_in_frame
                first_match = searched[1] if searched and searched[0] is find else None
                if record_counts is None and self.header is not None:
                    record_counts = self._record_counts()
                for chunk in iter_frame(content, offset, self.header is None, self._keep, tally,
                                        find=find, first_match=first_match,
                                        record_count=(record_counts or {}).get(offset)):
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

    def _record_counts(self) -> dict[int, int]:
        """Records per data frame by offset, from the file's index when it has a sound one.

        A hint that spares counting a frame's records before decoding it
        (checked_frames); a wrong count only makes the decoder count for
        itself. Asked at the first frame of records, so a reading that stops
        at the header never reads the index; read by position (pread), so
        the read-ahead thread's place in the file is not moved.
        """
        if self._index_fd is None:
            return {}
        from wtrec.wtrace.index import read_index  # loaded here: pipes never need it

        try:
            index, _why = read_index(_PositionalReads(self._index_fd))  # type: ignore[arg-type]
        except OSError:  # a hint: without it each frame's records are counted
            return {}
        return {} if index is None else {frame.offset: frame.records for frame in index.frames}

    def _iter_frames(self) -> Generator[tuple[bytes, int, Searched | None], None, None]:
        """Yields (decompressed content, offset, searched) per zstd frame; skips skippables.

        Frames are read in another thread and decompressed by up to
        DECOMPRESSORS more while the caller decodes the current one (zstd
        releases the GIL), so a long capture is read about as fast as the
        cores can decompress it, as `zstdcat | grep` runs on two. Only
        frames of at most PARALLEL_FRAME_MAX bytes go ahead in parallel
        (FRAMES_AHEAD of them, once one such frame has been seen): after a
        bigger one, one frame at most is read ahead, so at most two big
        frames are held at a time. A problem with a frame is raised only
        when it is asked for. When `find_in_frame` lets go of the GIL
        (has `releases_gil`: memmem, grep's search for a plain string),
        the thread that decompresses a frame also finds where it first
        matches, while the bytes are in that core's cache, beside the
        decoding (`searched`: the finder and the place; None when not
        searched there).
        """
        buffer = bytearray()
        decompressor = new_decompressor()
        workers = _Decompressors(DECOMPRESSORS) if DECOMPRESSORS > 1 else None
        ahead = _ReadAhead(lambda: self._next_frame(buffer, decompressor, workers),
                           self._seekable)
        asked, wanted = 0, DECOMPRESSORS  # more once the frames are known to be small
        try:
            while True:
                while asked < wanted:
                    ahead.request()
                    asked += 1
                frame = ahead.take()
                asked -= 1
                if frame is None:
                    return
                content, start, size = frame
                searched = None
                if isinstance(content, _Pending):
                    (content, searched), wanted = content.take(), FRAMES_AHEAD
                else:
                    wanted = 1
                self.frames += 1
                self.compressed_bytes += size
                self.content_bytes += len(content)
                yield content, start, searched
        finally:
            ahead.close()
            if workers is not None:
                workers.close()

    def _next_frame(self, buffer: bytearray, decompressor: ZstdDecompressor,
                    workers: _Decompressors | None) -> FrameRead | None:
        """(content, offset, compressed size) of the next zstd frame, or None at the end.

        The content of a small frame is _Pending when `workers` decompress it.
        """
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
                if workers is not None and content_size <= PARALLEL_FRAME_MAX:
                    find = self._find_in_frame
                    if self._keep in (None, no_events) or not getattr(find, "releases_gil", False):
                        find = None  # searched, if at all, by the decoding thread
                    pending = workers.submit(bytes(raw), content_size, start, find)
                    return pending, start, src.offset - start
                content = decompress_frame(decompressor, raw, content_size, start)
            return content, start, src.offset - start


class _Decompressors:
    """Daemon threads that decompress frames, each with its own zstd context.

    Frames go to the threads in turn and each thread answers in order, so
    the n-th frame submitted is the n-th answer of thread n % count. Plain
    threads and SimpleQueues rather than a ThreadPoolExecutor: a Ctrl-C
    that lands inside a Future's lock can leave it held, and the pool's
    threads, joined at exit, then never end (seen under load).
    """

    def __init__(self, count: int):
        self._inputs: list[queue.SimpleQueue[_FrameJob | None]] = []
        self._outputs: list[queue.SimpleQueue[_FrameAnswer]] = []
        for number in range(count):
            inputs: queue.SimpleQueue[_FrameJob | None] = queue.SimpleQueue()
            outputs: queue.SimpleQueue[_FrameAnswer] = queue.SimpleQueue()
            threading.Thread(target=_decompress_frames, args=(inputs, outputs), daemon=True,
                             name=f"wtrace-zstd-{number}").start()
            self._inputs.append(inputs)
            self._outputs.append(outputs)
        self._submitted = 0

    def submit(self, raw: bytes, content_size: int, start: int,
               find: Callable[[bytes, int], int] | None) -> _Pending:
        """Decompresses the frame and, with `find`, finds its first match too."""
        turn = self._submitted % len(self._inputs)
        self._submitted += 1
        self._inputs[turn].put((raw, content_size, start, find))
        return _Pending(self._outputs[turn])

    def close(self) -> None:
        for inputs in self._inputs:
            inputs.put(None)


class _Pending:
    """A frame being decompressed: `take` waits for its content (or raises its problem)."""

    def __init__(self, answers: queue.SimpleQueue[_FrameAnswer]):
        self._answers = answers

    def take(self) -> tuple[bytes, Searched | None]:
        answer, error = self._answers.get()
        if error is not None:
            raise error
        assert answer is not None
        return answer


def _decompress_frames(inputs: queue.SimpleQueue[_FrameJob | None],
                       outputs: queue.SimpleQueue[_FrameAnswer]) -> None:
    decompressor = new_decompressor()
    while (job := inputs.get()) is not None:
        raw, content_size, start, find = job
        try:
            content = decompress_frame(decompressor, raw, content_size, start)
            searched = None if find is None else (find, find(content, 0))
            outputs.put(((content, searched), None))
        except BaseException as exc:  # handed to the reading thread, raised there
            outputs.put((None, exc))


def is_seekable(stream: object) -> bool:
    """False for pipes, terminals and objects that cannot say: what arrives is all there is."""
    try:
        return bool(stream.seekable())  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        return False


def _file_descriptor(stream: BinaryIO) -> int | None:
    """The descriptor of a file object at its start, else None (in-memory streams, wrappers)."""
    try:
        return stream.fileno() if stream.tell() == 0 else None
    except (OSError, ValueError, AttributeError):
        return None


class _PositionalReads:
    """seek, tell and read over a file descriptor by os.pread, leaving its own position alone."""

    def __init__(self, fd: int):
        self._fd = fd
        self._position = 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position,
                os.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int) -> bytes:
        data = os.pread(self._fd, size, self._position)
        self._position += len(data)
        return data


class _ReadAhead:
    """Runs `produce` in a daemon thread, one call per request, results in order.

    A daemon thread, so a reader left blocked on a pipe never holds up the
    end of the program (`show --limit` on a live stream). On a seekable
    stream `close` waits for a read in progress, so the caller may rewind.
    """

    def __init__(self, produce: Callable[[], FrameRead | None], wait: bool):
        self._wait = wait
        self._requests: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[object, BaseException | None]] = (
            queue.SimpleQueue())
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True,
                                        name="wtrace-read-ahead")
        self._thread.start()

    def _run(self, produce: Callable[[], FrameRead | None]) -> None:
        while self._requests.get():
            try:
                self._results.put((produce(), None))
            except BaseException as exc:  # handed to the reading thread, raised there
                self._results.put((None, exc))
                return

    def request(self) -> None:
        self._requests.put(True)

    def take(self) -> FrameRead | None:
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

