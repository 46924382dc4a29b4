"""Chooses which records an offline command sees: by pid, comm, fd, syscall, time, content."""

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from wtrec.errors import UsageError
from wtrec.records import FdInfo, Header, IoEvent, Lost, Record


@dataclass(frozen=True)
class Selection:
    """Empty tuples and None select everything; within a field any value matches.

    `layers` picks TLS library calls ("tls") or syscalls ("syscall") of a
    capture made with record --tls.

    Times are boot-clock nanoseconds, like the events'; `pattern` searches
    the captured payload, `invert` keeps the events it does not match.
    """

    pids: tuple[int, ...] = ()
    comms: tuple[str, ...] = ()
    fds: tuple[int, ...] = ()
    syscalls: tuple[str, ...] = ()
    since_ns: int | None = None
    until_ns: int | None = None
    pattern: re.Pattern | None = None
    invert: bool = False
    layers: tuple[str, ...] = ()  # "tls", "syscall" (record --tls)

    def matches(self, event: IoEvent) -> bool:
        if self.pids and event.pid not in self.pids and event.tid not in self.pids:
            return False
        if self.comms and event.comm.decode("utf-8", "backslashreplace") not in self.comms:
            return False
        if self.fds and event.fd not in self.fds:
            return False
        if self.syscalls and event.syscall not in self.syscalls:
            return False
        if self.layers and event.layer not in self.layers:
            return False
        if self.since_ns is not None and event.ts_ns < self.since_ns:
            return False
        if self.until_ns is not None and event.ts_ns > self.until_ns:
            return False
        return self.pattern is None or bool(self.pattern.search(event.data)) != self.invert


def select_records(records: Iterable[Record], selection: Selection,
                   limit: int | None = None) -> Iterator[Record]:
    """Passes the events the selection matches, and every non-event record.

    Stops after `limit` events; records other than events (lost, end) pass
    through so losses stay visible where they happened.
    """
    shown = 0
    for record in records:
        if isinstance(record, IoEvent):
            if limit is not None and shown >= limit:
                return
            if not selection.matches(record):
                continue
            shown += 1
        yield record


def select_for_writing(records: Iterable[Record], selection: Selection) -> Iterator[Record]:
    """The matching events, each preceded by its fd record, and the lost records.

    An fd record is held back until an event of its (pid, fd) is kept, so
    the output describes exactly the descriptors it has events for.
    """
    held: dict[tuple[int, int], FdInfo] = {}
    for record in records:
        if isinstance(record, FdInfo):
            held[(record.pid, record.fd)] = record
        elif isinstance(record, IoEvent):
            if selection.matches(record):
                info = held.pop((record.pid, record.fd), None)
                if info is not None:
                    yield info
                yield record
        elif isinstance(record, Lost):
            yield record


def parse_time(text: str, header: Header, option: str) -> int:
    """'12.5' (seconds from the start) or an ISO time -> boot-clock nanoseconds."""
    start_boot = header.anchor_boot_ns + (header.start_ns - header.anchor_real_ns)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise UsageError(f"{option} takes a finite number of seconds, not {text!r}")
        return start_boot + round(seconds * 1e9)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} takes seconds from the start or an ISO time such as "
                         f"2026-11-26T10:41:02, not {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a naive time is local time
    wall_ns = round(moment.timestamp() * 1e6) * 1000
    return header.anchor_boot_ns + (wall_ns - header.anchor_real_ns)


def compile_pattern(pattern: str, fixed: bool = False, ignore_case: bool = False) -> re.Pattern:
    """A bytes regex from a command-line pattern (UTF-8; surrogate escapes kept as bytes)."""
    raw = pattern.encode("utf-8", "surrogateescape")
    try:
        return re.compile(re.escape(raw) if fixed else raw, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise UsageError(f"bad regular expression {pattern!r}: {exc}") from None
