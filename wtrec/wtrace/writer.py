"""Writing a capture: records into zstd frames, then the end record, index and seek table.

The writer never closes the stream it is handed (the caller owns paths and
files). Frames are bounded in records, bytes and age, so a recorder killed
with -9 loses at most about a second of events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import BinaryIO

import msgpack
import zstandard

from wtrec.records import End, Header, Record
from wtrec.wtrace.codec import encode_record
from wtrec.wtrace.framing import encode_preamble
from wtrec.wtrace.index import FrameEntry, encode_index_frame, encode_seek_table
from wtrec.wtrace.stats import CaptureStats, StatsAccumulator

# The writer closes a frame at whichever of these comes first.
FRAME_MAX_RECORDS = 1024
FRAME_MAX_BYTES = 1 << 20
FRAME_MAX_AGE_NS = 1_000_000_000


class CaptureWriter:
    """Streams records into zstd frames on a binary file it does not own.

    Frames are closed after FRAME_MAX_RECORDS records, FRAME_MAX_BYTES of
    packed records, or FRAME_MAX_AGE_NS after the frame's first record
    (checked by `tick`), so a recorder killed with -9 loses at most that.
    `close` appends the index (see wtrec.wtrace.index) after the end record.
    """

    def __init__(self, out: BinaryIO, header: Header, level: int = 3,
                 clock: Callable[[], int] = time.monotonic_ns):
        self._out = out
        self._clock = clock
        self._packer = msgpack.Packer(use_bin_type=True)
        self._compressor = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True)
        self._pending: list[bytes] = []
        self._pending_records: list[Record] = []
        self._pending_bytes = 0
        self._frame_started_ns = 0
        self.frames = 0
        self.bytes_written = 0
        self.frame_entries: list[FrameEntry] = []
        self._stats = StatsAccumulator()
        self._emit(encode_preamble())
        self.write(header)
        self.flush()

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
        self._pending_records.append(record)
        self._pending_bytes += len(packed)
        if len(self._pending) >= FRAME_MAX_RECORDS or self._pending_bytes >= FRAME_MAX_BYTES:
            self.flush()

    def tick(self) -> None:
        """Closes the open frame once its first record is a second old."""
        if self._pending and self._clock() - self._frame_started_ns >= FRAME_MAX_AGE_NS:
            self.flush()

    def flush(self) -> None:
        """Closes the open frame (if any) and pushes it to the file."""
        if not self._pending:
            return
        frame = self._compressor.compress(b"".join(self._pending))
        records = [r for r in self._pending_records if type(r) is not Header]
        events, first_ns, last_ns = self._stats.add_batch(records)
        self.frame_entries.append(FrameEntry(
            offset=self.bytes_written, size=len(frame), content_size=self._pending_bytes,
            records=len(self._pending), events=events, first_ns=first_ns, last_ns=last_ns))
        self._pending.clear()
        self._pending_records.clear()
        self._pending_bytes = 0
        self.frames += 1
        self._emit(frame)

    def close(self, end: End, index: bool = True) -> None:
        """Writes the end record, the last frame, the index and the zstd seek table.

        The file stays open; `index=False` leaves out both trailing frames.
        """
        self.write(end)
        self.flush()
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

