"""`wtrec merge`: several captures as one, in time order.

Each capture's times are on its own machine's boot clock; they are put on
the output's clock through wall-clock time (header anchors), so captures
from different boots or hosts interleave by when things really happened
(as far as the machines' clocks agree). Sequence numbers are given anew.
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


def merged_records(inputs: list[tuple[Iterable[Record], Header]],
                   target: Header) -> Iterator[Record]:
    """All inputs' records in time order (ties keep input order), numbered 0, 1, 2…"""
    streams = [_retimed(records, header, target) for records, header in inputs]
    seq = 0
    for record in heapq.merge(*streams, key=lambda r: r.ts_ns):
        if isinstance(record, IoEvent):
            record = dataclasses.replace(record, seq=seq)
            seq += 1
        yield record
