"""`wtrec merge`: several captures as one, in time order.

Each capture's times are on its own machine's boot clock; they are put on
the output's clock through wall-clock time (header anchors), so captures
from different boots or hosts interleave by when things really happened
(as far as the machines' clocks agree). Sequence numbers are given anew.

The files of one rotated recording (one series id, see docs/FORMAT.md) are
not interleaved but joined in the order of their index, keeping the
sequence numbers the recorder gave: they already run on across the files.
"""

import dataclasses
import heapq
from collections.abc import Iterable, Iterator

from wtrec.errors import FormatError
from wtrec.records import End, FdInfo, Header, IoEvent, Lost, Record

U64 = (1 << 64) - 1


def _retimed(records: Iterable[Record], source: Header,
             target: Header) -> Iterator[IoEvent | FdInfo | Lost]:
    shift = (source.anchor_real_ns - source.anchor_boot_ns) - (
        target.anchor_real_ns - target.anchor_boot_ns)
    for record in records:
        if isinstance(record, (Header, End)):
            continue
        if shift:
            ts_ns = record.ts_ns + shift
            if ts_ns > U64:
                raise FormatError(f"a time of {source.host!r}'s capture, put on the first "
                                  "capture's clock, passes 2^64 ns; their clock anchors disagree "
                                  "beyond reason")
            record = dataclasses.replace(record, ts_ns=max(0, ts_ns))
        yield record


def one_series(headers: Iterable[Header]) -> bool:
    """Whether all these are files of the same rotated recording."""
    ids = {None if h.series is None else h.series.id for h in headers}
    return len(ids) == 1 and None not in ids


def series_index(header: Header) -> int:
    """The file's index in its series (-1 outside one)."""
    return -1 if header.series is None else header.series.index


def merged_records(inputs: list[tuple[Iterable[Record], Header]],
                   target: Header) -> Iterator[Record]:
    """All inputs' records in time order (ties keep input order), numbered 0, 1, 2…

    The files of one series are joined in index order, their numbers kept.
    """
    if one_series(header for _, header in inputs):
        for records, header in sorted(inputs, key=lambda item: series_index(item[1])):
            yield from _retimed(records, header, target)
        return
    streams = [_retimed(records, header, target) for records, header in inputs]
    seq = 0
    for record in heapq.merge(*streams, key=lambda r: r.ts_ns):
        if isinstance(record, IoEvent):
            record = dataclasses.replace(record, seq=seq)
            seq += 1
        yield record
