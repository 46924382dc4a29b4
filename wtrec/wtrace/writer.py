"""Writing a capture: records into zstd frames, then the end record, index and seek table.

The writer never closes the stream it is handed (the caller owns paths and
files). Frames are bounded in records, bytes and age, so a recorder killed
with -9 loses at most about half a second of events.

The recorder hands events as rows (`write_event_rows`) in batches: a batch
is packed by one msgpack call, and the index totals are updated once per
frame. With `background=True` a second thread compresses and writes the
closed frames (zstd releases the GIL, so that is real parallelism), in
order; the file's bytes are the same either way.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import BinaryIO

import msgpack
import zstandard

from wtrec.records import ROW_DATA, End, Header, Record
from wtrec.wtrace.codec import encode_record
from wtrec.wtrace.framing import encode_preamble
from wtrec.wtrace.index import FrameEntry, encode_index_frame, encode_seek_table
from wtrec.wtrace.stats import CaptureStats, StatsAccumulator

# The writer closes a frame at whichever of these comes first.
FRAME_MAX_RECORDS = 1024
FRAME_MAX_BYTES = 1 << 20
FRAME_MAX_AGE_NS = 500_000_000
# A packed event row is its data plus at most this much (an array header,
# ints of at most 9 bytes, comm, syscall name and data headers): a batch
# that stays under FRAME_MAX_BYTES by this bound is packed in one call.
MAX_ROW_OVERHEAD = 128
# Closed frames waiting for the background thread; past this the writer waits.
MAX_QUEUED_FRAMES = 8
_DATA = itemgetter(ROW_DATA)


class CaptureWriter:
    """Streams records into zstd frames on a binary file it does not own.

    Frames are closed after FRAME_MAX_RECORDS records, FRAME_MAX_BYTES of
    packed records, or FRAME_MAX_AGE_NS after the frame's first record
    (checked by `tick`), so a recorder killed with -9 loses at most that.
    `close` appends the index (see wtrec.wtrace.index) after the end record.
    """

    def __init__(self, out: BinaryIO, header: Header, level: int = 3,
                 clock: Callable[[], int] = time.monotonic_ns, *, background: bool = False):
        self._out = out
        self._clock = clock
        self._packer = msgpack.Packer(use_bin_type=True)
        self._compressor = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True)
        self._pending: list[bytes | memoryview] = []  # packed records, one or many per piece
        self._pending_count = 0
        # What the open frame holds, in order, for the totals: records, lists
        # of event rows, and processes that ended after them.
        self._segments: list[Record | list[tuple] | _Ended | _TableSegment] = []
        self._pending_bytes = 0
        self._frame_started_ns = 0
        self.frames = 0
        self.bytes_written = 0
        self.frame_entries: list[FrameEntry] = []
        self._stats = StatsAccumulator()
        self._frames: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._emit(encode_preamble())
        self.write(header)
        self.flush()
        if background:
            self._frames = queue.Queue(MAX_QUEUED_FRAMES)
            self._thread = threading.Thread(target=self._compress_frames, daemon=True,
                                            name="wtrec-writer")
            self._thread.start()

    @property
    def stats(self) -> CaptureStats:
        """The totals of everything written so far (not the open frame)."""
        return self._stats.snapshot()

    def write(self, record: Record) -> None:
        """Adds one record, closing the frame when it is full."""
        packed = self._packer.pack(encode_record(record))
        if not self._pending:
            self._frame_started_ns = self._clock()
        self._pending.append(packed)
        self._pending_count += 1
        self._segments.append(record)
        self._pending_bytes += len(packed)
        if self._pending_count >= FRAME_MAX_RECORDS or self._pending_bytes >= FRAME_MAX_BYTES:
            self._close_frame()

    def write_event_rows(self, rows: list[tuple]) -> int:
        """Adds events given as numbered rows (wtrec.records.EventRow + seq), in order;
        returns the bytes of data they carry.

        The file is byte for byte what `write` of each event would make.
        """
        position, total, data_bytes = 0, len(rows), 0
        while position < total:
            room = FRAME_MAX_RECORDS - self._pending_count
            batch = rows[position:position + room]
            size = sum(map(len, map(_DATA, batch)))
            if self._pending_bytes + size + MAX_ROW_OVERHEAD * len(batch) < FRAME_MAX_BYTES:
                packed = self._pack_rows(batch)
                data_bytes += size
            else:  # the byte bound may close the frame inside the batch: find where
                pieces = list(map(self._packer.pack, batch))
                used, size = 0, self._pending_bytes
                while used < len(pieces) and size < FRAME_MAX_BYTES:
                    size += len(pieces[used])
                    used += 1
                batch = batch[:used]
                packed = b"".join(pieces[:used])
                data_bytes += sum(map(len, map(_DATA, batch)))
            if not self._pending:
                self._frame_started_ns = self._clock()
            self._pending.append(packed)
            self._pending_count += len(batch)
            self._segments.append(batch)
            self._pending_bytes += len(packed)
            position += len(batch)
            if (self._pending_count >= FRAME_MAX_RECORDS
                    or self._pending_bytes >= FRAME_MAX_BYTES):
                self._close_frame()
        return data_bytes

    def write_event_table(self, table, first_seq: int) -> int:
        """write_event_rows for events given as an EventTable (wtrec.wtrace.event_table),
        numbered from `first_seq`; returns the bytes of data they carry.

        The file is byte for byte what write_event_rows of `table.rows(first_seq)`
        makes: the table is packed once, then cut where the record and byte
        bounds close frames, as the rows way cuts. Its index totals are added
        once, with the frame holding its first event.
        """
        if not len(table):
            return 0
        packed = table.pack(first_seq)
        position, total = 0, len(table)
        while position < total:
            taken = packed.taken(position, min(FRAME_MAX_RECORDS - self._pending_count,
                                               total - position),
                                 FRAME_MAX_BYTES - self._pending_bytes)
            piece = packed.between(position, position + taken)
            if not self._pending:
                self._frame_started_ns = self._clock()
            self._pending.append(piece)
            self._pending_count += taken
            self._segments.append(_TableSegment(
                table if position == 0 else None, *table.part(position, position + taken).span()))
            self._pending_bytes += len(piece)
            position += taken
            if (self._pending_count >= FRAME_MAX_RECORDS
                    or self._pending_bytes >= FRAME_MAX_BYTES):
                self._close_frame()
        return table.data_bytes()

    def process_ended(self, pid: int) -> None:
        """Says that process `pid` has exited: its totals are final (until the pid is reused),
        so they leave the writer's tables for a compressed spill. Memory then stays flat over
        any number of short-lived processes."""
        if self._segments:
            self._segments.append(_Ended(pid))  # after its events of the open frame
        else:
            self._stats.retire_process(pid)

    def _pack_rows(self, rows: list[tuple]) -> bytes:
        """The rows packed one after the other: one msgpack call, its array header cut off."""
        packed = self._packer.pack(rows)
        return packed[len(self._packer.pack_array_header(len(rows))):]

    def tick(self) -> None:
        """Closes the open frame once its first record is FRAME_MAX_AGE_NS old."""
        self._raise_failure()
        if self._pending and self._clock() - self._frame_started_ns >= FRAME_MAX_AGE_NS:
            self._close_frame()

    def flush(self) -> None:
        """Closes the open frame (if any) and pushes it to the file; returns once it is there."""
        self._close_frame()
        self.sync()

    def sync(self) -> None:
        """Returns once every closed frame is in the file (the open one stays open)."""
        if self._frames is not None:
            self._frames.join()
        self._raise_failure()

    def _close_frame(self) -> None:
        """Closes the open frame; the background thread, if any, writes it later."""
        if not self._pending:
            return
        content = b"".join(self._pending)
        events, first_ns, last_ns = self._add_totals()
        meta = (self._pending_bytes, self._pending_count, events, first_ns, last_ns)
        self._pending.clear()
        self._segments.clear()
        self._pending_count = 0
        self._pending_bytes = 0
        if self._frames is None:
            self._write_frame(content, meta)
        else:
            self._raise_failure()
            self._frames.put((content, meta))

    def _add_totals(self) -> tuple[int, int | None, int | None]:
        """Adds the open frame's records to the totals; its event count and time range."""
        events, first, last = 0, None, None
        records: list[Record] = []
        for segment in self._segments:
            if isinstance(segment, list | _TableSegment):
                if records:
                    counted = self._stats.add_batch(records)
                    events, first, last = _combine((events, first, last), counted)
                    records = []
                if isinstance(segment, list):
                    counted = self._stats.add_rows(segment)
                else:
                    if segment.table is not None:
                        self._stats.add_table(segment.table)
                    counted = (segment.events, segment.first_ns, segment.last_ns)
                events, first, last = _combine((events, first, last), counted)
            elif isinstance(segment, _Ended):
                if records:
                    counted = self._stats.add_batch(records)
                    events, first, last = _combine((events, first, last), counted)
                    records = []
                self._stats.retire_process(segment.pid)
            elif not isinstance(segment, Header):
                records.append(segment)
        if records:
            events, first, last = _combine((events, first, last),
                                           self._stats.add_batch(records))
        return events, first, last

    def _write_frame(self, content: bytes, meta: tuple) -> None:
        content_size, records, events, first_ns, last_ns = meta
        frame = self._compressor.compress(content)
        self.frame_entries.append(FrameEntry(
            offset=self.bytes_written, size=len(frame), content_size=content_size,
            records=records, events=events, first_ns=first_ns, last_ns=last_ns))
        self.frames += 1
        self._emit(frame)

    def _compress_frames(self) -> None:
        """The background thread: compresses and writes frames in the order they were closed."""
        assert self._frames is not None
        while True:
            job = self._frames.get()
            try:
                if job is None:
                    return
                if self._failure is None:
                    self._write_frame(*job)
            except BaseException as exc:  # handed to the caller's thread
                self._failure = exc
            finally:
                self._frames.task_done()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self._stop_thread()
            raise failure

    def _stop_thread(self) -> None:
        if self._thread is not None and self._frames is not None:
            self._frames.put(None)
            self._thread.join()
            self._thread = None
            self._frames = None

    def close(self, end: End, index: bool = True) -> None:
        """Writes the end record, the last frame, the index and the zstd seek table.

        The file stays open; `index=False` leaves out both trailing frames.
        """
        self.write(end)
        self.flush()
        self._stop_thread()
        if not index:
            return
        sizes = [(self.frame_entries[0].offset, 0)]  # the preamble
        sizes += [(f.size, f.content_size) for f in self.frame_entries]
        frame = encode_index_frame(self.bytes_written, self.frame_entries, self.stats)
        if frame is not None:
            self._emit(frame)
            sizes.append((len(frame), 0))
        self._emit(encode_seek_table(sizes))

    def _emit(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self._out.flush()
        self.bytes_written += len(chunk)


@dataclass(frozen=True)
class _Ended:
    """In the open frame's segments: process `pid` ended here."""

    pid: int


@dataclass(frozen=True)
class _TableSegment:
    """In the open frame's segments: events written as an EventTable, whose totals are
    added with its first piece (`table` is None in the others)."""

    table: object
    events: int
    first_ns: int
    last_ns: int


def _combine(a: tuple[int, int | None, int | None],
             b: tuple[int, int | None, int | None]) -> tuple[int, int | None, int | None]:
    """Two (events, first_ns, last_ns) as one."""
    firsts = [t for t in (a[1], b[1]) if t is not None]
    lasts = [t for t in (a[2], b[2]) if t is not None]
    return a[0] + b[0], min(firsts) if firsts else None, max(lasts) if lasts else None
