"""The .wtrace file format's public face: what the rest of wtrec may use of it.

The internals live in wtrec/wtrace/ (framing, codec, reader, writer, index,
salvage, stats), the only code that knows zstd and msgpack. Other packages
import from here, never from wtrec.wtrace. docs/FORMAT.md is the byte-level
specification; keep the two in step.
"""

from wtrec.records import FORMAT_MAJOR, FORMAT_MINOR
from wtrec.wtrace.framing import encode_preamble
from wtrec.wtrace.index import Index, read_index
from wtrec.wtrace.reader import CaptureReader, is_seekable, start, start_reading
from wtrec.wtrace.salvage import Salvage, salvage
from wtrec.wtrace.stats import CaptureStats, Counts, FdTotals, ProcessTotals, StatsAccumulator
from wtrec.wtrace.writer import CaptureWriter

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "CaptureReader",
    "CaptureStats",
    "CaptureWriter",
    "Counts",
    "FdTotals",
    "Index",
    "ProcessTotals",
    "Salvage",
    "StatsAccumulator",
    "encode_preamble",
    "is_seekable",
    "read_index",
    "salvage",
    "start",
    "start_reading",
]
