"""Totals of a capture: per process, per file descriptor and overall.

The writer accumulates them as it goes to put them in the index; `info`
computes them the same way by scanning when a file has no index.

A recorder runs for days over processes that come and go; the index keeps
the totals of every one of them, but the accumulator need not keep them in
dictionaries: once the recorder says a process has exited, its rows move
into a compressed spill (a few bytes a process) and come back only for the
snapshot the index is built from.
"""

from dataclasses import dataclass, field
from operator import itemgetter

import msgpack
import zstandard

from wtrec.records import (
    ROW_TS,
    TYPE_READ,
    End,
    FdIdentity,
    FdInfo,
    IoEvent,
    Lost,
    Record,
)


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


# A row of the accumulator, per (pid, fd, identity) and direction: events,
# captured, expected, truncated, failed, first_ns, last_ns, comm, and when
# the row was made (rows are listed in that order).
_NEW_ROW = [0, 0, 0, 0, 0, 1 << 64, -1, b"", 0]
# Spilled rows are packed into a buffer, compressed a chunk of this size at a time.
SPILL_CHUNK = 256 << 10
_TIME = itemgetter(ROW_TS)


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
        self._rows: dict[tuple[int, int, FdIdentity | None, bool], list] = {}
        self._current: dict[tuple[int, int, bool], list] = {}  # (pid, fd, in?) -> its row now
        self._identity: dict[int, dict[int, FdIdentity]] = {}  # pid -> fd -> identity
        self._keys_of: dict[int, list[tuple[int, int, FdIdentity | None, bool]]] = {}  # by pid
        self._made = 0  # rows made so far
        self._spill = bytearray()  # rows of exited processes, packed
        self._spilled: list[bytes] = []  # ...and compressed, a chunk at a time
        self._packer = msgpack.Packer(use_bin_type=True)

    def add(self, record: Record) -> None:
        self.add_batch((record,))

    def add_batch(self, records) -> tuple[int, int | None, int | None]:
        """Adds records; returns the batch's event count and time range."""
        times = []
        current = self._current
        for record in records:
            kind = type(record)
            if kind is IoEvent:
                ts = record.ts_ns
                times.append(ts)
                inbound = record.direction == "in"
                row = current.get((record.pid, record.fd, inbound))
                if row is None:
                    row = self._row(record.pid, record.fd, inbound)
                captured, ret = len(record.data), record.ret
                if inbound or record.layer == "tls":  # as IoEvent.expected, inlined
                    expected = ret if ret is not None and ret > 0 else 0
                else:
                    expected = record.count
                row[0] += 1
                row[1] += captured
                row[2] += expected
                if captured < expected:
                    row[3] += 1
                if ret is not None and ret < 0:
                    row[4] += 1
                if ts < row[5]:
                    row[5] = ts
                if ts > row[6]:
                    row[6] = ts
                row[7] = record.comm
            elif kind is FdInfo:
                self._identity.setdefault(record.pid, {})[record.fd] = record.identity
                current.pop((record.pid, record.fd, False), None)  # the next event finds
                current.pop((record.pid, record.fd, True), None)  # or starts its row
            elif kind is Lost:
                self.lost += record.count
            elif kind is End:
                self.end = record
        self.records += len(records)
        if not times:
            return 0, None, None
        return len(times), min(times), max(times)

    def add_rows(self, rows: list[tuple]) -> tuple[int, int | None, int | None]:
        """add_batch for events given as numbered rows (EventRow + seq, as the recorder writes
        them); returns the same. One pass, each row unpacked by the loop itself: about half
        the cost of an IoEvent's attribute lookups, or of summing column by column."""
        if not rows:
            return 0, None, None
        current = self._current
        new_row = self._row
        for kind, ts, pid, _tid, _uid, comm, fd, count, data, _name, ret, _seq in rows:
            inbound = kind == TYPE_READ
            row = current.get((pid, fd, inbound))
            if row is None:
                row = new_row(pid, fd, inbound)
            captured = len(data)
            if inbound:  # as IoEvent.expected
                expected = ret if ret is not None and ret > 0 else 0
            else:
                expected = count
            row[0] += 1
            row[1] += captured
            row[2] += expected
            if captured < expected:
                row[3] += 1
            if ret is not None and ret < 0:
                row[4] += 1
            if ts < row[5]:
                row[5] = ts
            if ts > row[6]:
                row[6] = ts
            row[7] = comm
        self.records += len(rows)
        return len(rows), min(map(_TIME, rows)), max(map(_TIME, rows))

    def add_table(self, table) -> tuple[int, int | None, int | None]:
        """add_rows for events given as an EventTable (wtrec.wtrace.event_table): its sums by
        (pid, fd, direction) are made by numpy, then added key by key."""
        totals = table.totals()
        if totals is None or len(totals) * 8 > len(table):  # big values, or few events a key
            return self.add_rows(table.rows())
        if not totals:
            return 0, None, None
        current = self._current
        new_row = self._row
        first, last = None, None
        for (pid, fd, inbound, events, captured, expected, truncated, failed, first_ts,
             last_ts, comm) in totals:
            row = current.get((pid, fd, inbound))
            if row is None:
                row = new_row(pid, fd, inbound)
            row[0] += events
            row[1] += captured
            row[2] += expected
            row[3] += truncated
            row[4] += failed
            if first_ts < row[5]:
                row[5] = first_ts
            if last_ts > row[6]:
                row[6] = last_ts
            row[7] = comm
            first = first_ts if first is None else min(first, first_ts)
            last = last_ts if last is None else max(last, last_ts)
        self.records += len(table)
        return len(table), first, last

    def _row(self, pid: int, fd: int, inbound: bool) -> list:
        key = (pid, fd, self._identity.get(pid, {}).get(fd), inbound)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = list(_NEW_ROW)
            row[8] = self._made
            self._made += 1
            self._keys_of.setdefault(pid, []).append(key)
        self._current[(pid, fd, inbound)] = row
        return row

    def retire_process(self, pid: int) -> None:
        """The process has exited: its rows move to the compressed spill.

        A later process with the same pid starts afresh (its descriptors are
        named again before its events); rows that meet again under the same
        key are added up in the snapshot, as they would have been here.
        """
        self._identity.pop(pid, None)
        pack = self._packer.pack
        for key in self._keys_of.pop(pid, ()):
            row = self._rows.pop(key)
            _pid, fd, identity, inbound = key
            self._current.pop((pid, fd, inbound), None)
            named = None if identity is None else (identity.kind, identity.local,
                                                   identity.remote, identity.path)
            self._spill += pack((pid, fd, named, inbound, row))
        if len(self._spill) >= SPILL_CHUNK:
            self._spilled.append(zstandard.ZstdCompressor().compress(bytes(self._spill)))
            self._spill.clear()

    def _all_rows(self):
        """(key, row) of every row, spilled or not, in the order they were made."""
        if not self._spilled and not self._spill:
            return self._rows.items()
        spilled = []
        packed = [zstandard.ZstdDecompressor().decompress(chunk) for chunk in self._spilled]
        for chunk in [*packed, bytes(self._spill)]:
            unpacker = msgpack.Unpacker(use_list=True, raw=False)
            unpacker.feed(chunk)
            for pid, fd, named, inbound, row in unpacker:
                identity = None if named is None else FdIdentity(*named)
                spilled.append(((pid, fd, identity, inbound), row))
        merged: dict[tuple, list] = {}
        for key, row in [*spilled, *self._rows.items()]:
            seen = merged.get(key)
            if seen is None:
                merged[key] = list(row)
                continue
            for slot in range(5):
                seen[slot] += row[slot]
            seen[5], seen[6] = min(seen[5], row[5]), max(seen[6], row[6])
            seen[7] = row[7]  # the later process's comm, as the last event's would be
        return sorted(merged.items(), key=lambda item: item[1][8])

    def snapshot(self) -> CaptureStats:
        stats = CaptureStats(lost=self.lost, records=self.records, end=self.end)
        latest: dict[int, int] = {}  # pid -> last_ns of the row its comm came from
        rows = self._all_rows()
        for (pid, fd, identity, inbound), row in rows:
            counts = Counts(*row[:5])
            fd_row = stats.fds.get((pid, fd, identity))
            if fd_row is None:
                fd_row = stats.fds[(pid, fd, identity)] = FdTotals(pid, fd, identity)
            (fd_row.into if inbound else fd_row.out).merge(counts)
            proc = stats.processes.get(pid)
            if proc is None:
                proc = stats.processes[pid] = ProcessTotals(pid, row[7], first_ns=row[5],
                                                            last_ns=row[6])
            if row[6] >= latest.get(pid, -1):
                proc.comm, latest[pid] = row[7], row[6]
            proc.first_ns, proc.last_ns = min(proc.first_ns, row[5]), max(proc.last_ns, row[6])
            (proc.into if inbound else proc.out).merge(counts)
            stats.all.merge(counts)
        if rows:
            stats.first_ns = min(p.first_ns for p in stats.processes.values())
            stats.last_ns = max(p.last_ns for p in stats.processes.values())
        return stats
