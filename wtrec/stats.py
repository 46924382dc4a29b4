"""Totals of a capture: per process, per file descriptor and overall.

The writer accumulates them as it goes to put them in the index; `info`
computes them the same way by scanning when a file has no index.
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
    """The totals of a capture, as the index stores them."""

    all: Counts = field(default_factory=Counts)
    lost: int = 0
    records: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    processes: dict[int, ProcessTotals] = field(default_factory=dict)
    fds: dict[tuple[int, int, FdIdentity | None], FdTotals] = field(default_factory=dict)
    end: End | None = None


# A row of the accumulator: first_ns, last_ns, then out and in counts
# (events, captured, expected, truncated, failed) at these offsets.
_OUT, _IN = 2, 7


class StatsAccumulator:
    """Builds CaptureStats from records in file order, cheaply enough for the recorder.

    The recorder writes every event through here, so the per-event work is
    one tight loop over a batch with one dictionary lookup per event; the
    per-process and overall totals are summed from the per-fd rows only
    when a snapshot is asked for.
    """

    def __init__(self):
        self.records = 0
        self.lost = 0
        self.end: End | None = None
        self._rows: dict[tuple[int, int, FdIdentity | None], list[int]] = {}
        self._current: dict[tuple[int, int], list[int]] = {}  # (pid, fd) -> its row now
        self._identity: dict[tuple[int, int], FdIdentity] = {}
        self._comm: dict[int, bytes] = {}

    def add(self, record: Record) -> None:
        self.add_batch((record,))

    def add_batch(self, records) -> tuple[int, int | None, int | None]:
        """Adds records; returns the batch's event count and time range."""
        events, first, last = 0, None, None
        current, comm = self._current, self._comm
        for record in records:
            if type(record) is IoEvent:
                events += 1
                ts = record.ts_ns
                if first is None or ts < first:
                    first = ts
                if last is None or ts > last:
                    last = ts
                where = (record.pid, record.fd)
                row = current.get(where)
                if row is None:
                    row = self._row(where)
                if ts < row[0]:  # noqa: PLR1730 - a comparison costs less than a call
                    row[0] = ts
                if ts > row[1]:  # noqa: PLR1730
                    row[1] = ts
                captured, ret = len(record.data), record.ret
                if record.direction == "in":  # as IoEvent.expected, inlined
                    expected, base = (ret if ret is not None and ret > 0 else 0), _IN
                else:
                    expected, base = record.count, _OUT
                row[base] += 1
                row[base + 1] += captured
                row[base + 2] += expected
                row[base + 3] += captured < expected
                row[base + 4] += ret is not None and ret < 0
                comm[record.pid] = record.comm
            elif type(record) is FdInfo:
                where = (record.pid, record.fd)
                self._identity[where] = record.identity
                current.pop(where, None)  # the next event finds or starts its row
            elif type(record) is Lost:
                self.lost += record.count
            elif type(record) is End:
                self.end = record
            self.records += 1
        return events, first, last

    def _row(self, where: tuple[int, int]) -> list[int]:
        key = (*where, self._identity.get(where))
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [1 << 64, -1] + [0] * 10
        self._current[where] = row
        return row

    def snapshot(self) -> CaptureStats:
        stats = CaptureStats(lost=self.lost, records=self.records, end=self.end)
        for (pid, fd, identity), row in self._rows.items():
            out, into = Counts(*row[_OUT:_IN]), Counts(*row[_IN:_IN + 5])
            stats.fds[(pid, fd, identity)] = FdTotals(pid, fd, identity, out, into)
            proc = stats.processes.get(pid)
            if proc is None:
                proc = stats.processes[pid] = ProcessTotals(pid, self._comm[pid],
                                                            first_ns=row[0], last_ns=row[1])
            proc.first_ns, proc.last_ns = min(proc.first_ns, row[0]), max(proc.last_ns, row[1])
            proc.out.merge(out)
            proc.into.merge(into)
            stats.all.merge(out)
            stats.all.merge(into)
        if self._rows:
            stats.first_ns = min(p.first_ns for p in stats.processes.values())
            stats.last_ns = max(p.last_ns for p in stats.processes.values())
        return stats
