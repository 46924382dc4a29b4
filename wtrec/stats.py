"""Totals of a capture: per process, per file descriptor and overall.

The writer keeps them as it goes to put them in the index; `info` computes
them by scanning when a file has no index. Same numbers either way.
"""

from dataclasses import dataclass, field

from wtrec.records import End, FdIdentity, FdInfo, IoEvent, Lost, Record


@dataclass
class Counts:
    """Events and bytes of one direction, or of everything."""

    events: int = 0
    captured: int = 0  # bytes in the file
    expected: int = 0  # bytes a whole capture would hold (asked for / received)
    truncated: int = 0
    failed: int = 0

    def add(self, event: IoEvent) -> None:
        self.events += 1
        self.captured += len(event.data)
        self.expected += event.expected
        self.truncated += event.truncated
        self.failed += event.failed

    def merge(self, other: "Counts") -> None:
        self.events += other.events
        self.captured += other.captured
        self.expected += other.expected
        self.truncated += other.truncated
        self.failed += other.failed


@dataclass
class ProcessTotals:
    pid: int
    comm: bytes
    out: Counts = field(default_factory=Counts)
    into: Counts = field(default_factory=Counts)  # the read family
    first_ns: int = 0
    last_ns: int = 0


@dataclass
class FdTotals:
    """One descriptor under one identity; a reused number is a new row."""

    pid: int
    fd: int
    identity: FdIdentity | None
    out: Counts = field(default_factory=Counts)
    into: Counts = field(default_factory=Counts)


@dataclass
class CaptureStats:
    """Accumulates totals from records in file order."""

    all: Counts = field(default_factory=Counts)
    lost: int = 0
    records: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    processes: dict[int, ProcessTotals] = field(default_factory=dict)
    fds: dict[tuple[int, int, FdIdentity | None], FdTotals] = field(default_factory=dict)
    end: End | None = None
    _identity: dict[tuple[int, int], FdIdentity] = field(default_factory=dict, repr=False)

    def add(self, record: Record) -> None:
        self.records += 1
        if isinstance(record, IoEvent):
            self._add_event(record)
        elif isinstance(record, FdInfo):
            self._identity[(record.pid, record.fd)] = record.identity
        elif isinstance(record, Lost):
            self.lost += record.count
        elif isinstance(record, End):
            self.end = record

    def _add_event(self, event: IoEvent) -> None:
        self.all.add(event)
        ts = event.ts_ns
        if self.first_ns is None or ts < self.first_ns:
            self.first_ns = ts
        if self.last_ns is None or ts > self.last_ns:
            self.last_ns = ts
        proc = self.processes.get(event.pid)
        if proc is None:
            proc = self.processes[event.pid] = ProcessTotals(event.pid, event.comm,
                                                             first_ns=ts, last_ns=ts)
        proc.comm = event.comm
        proc.last_ns = max(proc.last_ns, ts)
        identity = self._identity.get((event.pid, event.fd))
        key = (event.pid, event.fd, identity)
        fd = self.fds.get(key)
        if fd is None:
            fd = self.fds[key] = FdTotals(event.pid, event.fd, identity)
        if event.direction == "in":
            proc.into.add(event)
            fd.into.add(event)
        else:
            proc.out.add(event)
            fd.out.add(event)
