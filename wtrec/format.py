"""The .wtrace file format's public face: what the rest of wtrec may use of it.

The internals live in wtrec/wtrace/ (framing, codec, reader, writer, index,
salvage, stats), the only code that knows zstd and msgpack. Other packages
import from here, never from wtrec.wtrace. docs/FORMAT.md is the byte-level
specification; keep the two in step.
"""

from importlib import import_module
from typing import TYPE_CHECKING

from wtrec.records import FORMAT_MAJOR, FORMAT_MINOR

if TYPE_CHECKING:
    from wtrec.wtrace.framing import encode_preamble
    from wtrec.wtrace.index import Index, read_index
    from wtrec.wtrace.reader import CaptureReader, is_seekable, start, start_reading
    from wtrec.wtrace.salvage import Salvage, salvage
    from wtrec.wtrace.stats import (
        CaptureStats,
        Counts,
        FdTotals,
        ProcessTotals,
        StatsAccumulator,
    )
    from wtrec.wtrace.writer import CaptureWriter

# Where each name lives. A module loads when one of its names is first
# used, so a command imports only the parts it needs (`grep` neither the
# writer nor salvage nor the index: about 7 ms of every start).
_HOME = {
    "encode_preamble": "framing",
    "Index": "index", "read_index": "index",
    "CaptureReader": "reader", "is_seekable": "reader", "start": "reader",
    "start_reading": "reader",
    "Salvage": "salvage", "salvage": "salvage",
    "CaptureStats": "stats", "Counts": "stats", "FdTotals": "stats", "ProcessTotals": "stats",
    "StatsAccumulator": "stats",
    "CaptureWriter": "writer",
}


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"wtrec.wtrace.{home}"), name)
    globals()[name] = value  # later uses skip this function
    return value


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
