"""Writing a capture made from other captures: its header and its end record.

A derived file (filter, redact, merge, recover) keeps the recording's header
facts and appends a Derivation step naming what was done and from which
headers. Provenance stays flat: each step's input headers are stored
without their own provenance, which the new header carries forward.
"""

import dataclasses
import time
from collections.abc import Iterable

from wtrec import __version__
from wtrec.format import CaptureWriter
from wtrec.records import FORMAT_MAJOR, FORMAT_MINOR, Derivation, End, Header, Record

U64 = (1 << 64) - 1


def derived_header(inputs: list[Header], op: str, argv: Iterable[str],
                   notes: Iterable[tuple[str, str]] = ()) -> Header:
    """The first input's header, current format, plus a step saying how it was made."""
    carried: list[Derivation] = []
    for header in inputs:
        carried.extend(header.provenance)
    step = Derivation(op=op, tool_version=__version__, time_ns=time.time_ns(), argv=tuple(argv),
                      notes=tuple(notes),
                      inputs=tuple(dataclasses.replace(h, provenance=()) for h in inputs))
    return dataclasses.replace(inputs[0], format_major=FORMAT_MAJOR, format_minor=FORMAT_MINOR,
                               tool_version=__version__, provenance=(*carried, step),
                               series=None)


def write_capture(writer: CaptureWriter, records: Iterable[Record], end_ns: int | None = None) -> End:
    """Writes records (no header, no end) and closes with an end record that adds up."""
    last_ns = 0
    for record in records:
        if isinstance(record, (Header, End)):
            continue
        writer.write(record)
        last_ns = max(last_ns, getattr(record, "ts_ns", 0))
    writer.flush()  # the totals count what has been written out
    stats = writer.stats
    # Totals of crafted inputs (counts of 2^64 - 1) can pass 64 bits; the
    # end record holds them saturated, and the index is left out (readers scan).
    end = End(ts_ns=end_ns if end_ns is not None else last_ns,
              events=min(stats.all.events, U64), bytes=min(stats.all.captured, U64),
              lost=min(stats.lost, U64))
    writer.close(end)
    return end
