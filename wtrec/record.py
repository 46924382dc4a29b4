"""A recording session: moves events from a probe into a writer until told to stop.

`record_session` sets one up (probe, held command, header, signals) on an
output stream it is handed; `Recording` knows where bytes come from
(anything with the Probe interface) and is handed a CaptureWriter. Neither
knows of paths, bcc or the terminal: messages go to a `notify` callable.
Kernel records are decoded, put in time order, given a sequence number and
preceded by an fd record whenever an event's (pid, fd) is new or changed.

Events travel in batches from the kernel's bytes to the writer: runs of
same-sized plain events as EventTables (numpy columns,
wtrec/wtrace/event_table.py), everything else as rows
(wtrec.records.EventRow: tuples) and records. The two are held apart in
time order and merged as they are written. The checks made per batch
(which descriptors are not yet named in the file, how many events --count
still allows, which rows the reorder moved and so need their seq made
again) leave no Python code running per event in the common case.
"""

import gc
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import compress, count, repeat
from operator import itemgetter, ne
from typing import BinaryIO, Protocol

from wtrec import __version__
from wtrec.capture import compat32, tls_events
from wtrec.capture.fd_table import FdTable
from wtrec.capture.kernel_records import BadKernelEvent, FdNote, KernelDecoder, TlsKernelEvent
from wtrec.capture.launch import HeldCommand
from wtrec.capture.ordering import ReorderBuffer
from wtrec.capture.probe import Probe, ProbeConfig, RecordCounts
from wtrec.capture.tls_libraries import AttachTarget
from wtrec.errors import OutputError, ProbeError
from wtrec.format import FORMAT_MAJOR, FORMAT_MINOR, CaptureWriter
from wtrec.records import (
    ROW_FD,
    ROW_PID,
    ROW_SEQ,
    ROW_TS,
    End,
    EventRow,
    FdIdentity,
    FdInfo,
    Filters,
    Header,
    IoEvent,
    Lost,
    Record,
    event_row,
)
from wtrec.wtrace.event_table import EventTable

# The reading loop: each step takes at most STEP_BYTES of kernel records, so
# a signal is seen within a step whatever the load; when a step found little,
# the loop sleeps POLL_S (the BPF program never wakes the reader).
STEP_BYTES = 1 << 20
POLL_S = 0.02
QUIET_STEP_BYTES = STEP_BYTES // 2
# After a signal, what is still in the buffer is taken until this long after
# the signal and the rest counted lost, so Ctrl-C ends a recording within a
# second. Other stops (duration, count, the command's exit) take it all.
DRAIN_BUDGET_NS = 600_000_000
# When the kernel buffer is found empty, the open frame goes to the file once
# its oldest record is this old: a trickle of events is on disk within a
# fraction of a second, a busy stream still fills whole frames.
IDLE_FLUSH_NS = 200_000_000
STATUS_EVERY_NS = 500_000_000
# The kernel's loss counters are read at most this often (and at the end):
# a read is a few map lookups, which at a step per ~2,000 events cost
# ~0.1 us an event. The count stays exact; a Lost record is at most this late.
LOSS_CHECK_NS = 50_000_000
COLLECT_EVERY_NS = 1_000_000_000
FULL_COLLECT_EVERY = 10
_PIDS, _FDS = itemgetter(ROW_PID), itemgetter(ROW_FD)
_SEQS = itemgetter(ROW_SEQ)


def boot_ns() -> int:
    """CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns()."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass
class Stats:
    """What the live status line and the final summary report."""

    events: int = 0
    bytes: int = 0
    lost: int = 0
    incomplete: int = 0
    read_faults: int = 0
    lost_fd_notes: int = 0
    unfollowed: int = 0
    unread_at_stop: int = 0  # events of `lost` still in the kernel buffer when the drain ended
    started_ns: int = 0

    def rate(self, now_ns: int) -> float:
        elapsed = (now_ns - self.started_ns) / 1e9
        return self.events / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class StopRule:
    """When to stop besides a signal: after so long, so many events, or when a child exits."""

    duration_s: float | None = None
    max_events: int | None = None
    child: subprocess.Popen | None = None  # stop once it has exited


class CaptureSink(Protocol):
    """What a recording writes into: a CaptureWriter, or a RotatingWriter (wtrec/rotation.py)."""

    def write(self, record: Record) -> None: ...

    def write_event_rows(self, rows: list[tuple]) -> int: ...  # the bytes of data written

    def write_event_table(self, table: EventTable, first_seq: int) -> int: ...  # the same

    def process_ended(self, pid: int) -> None: ...

    def tick(self) -> bool | None: ...  # True: a new file began

    def flush(self) -> None: ...

    def close(self, end: End) -> None: ...


class Recording:
    """Drives one probe into one writer; `stop()` may be called from a signal handler."""

    def __init__(self, probe: Probe, writer: CaptureSink, rule: StopRule,
                 status: Callable[[Stats], None] | None = None,
                 fds: FdTable | None = None, sleep: Callable[[float], None] = time.sleep,
                 tls_targets: list[AttachTarget] | None = None):
        self._probe = probe
        self._writer = writer
        self._rule = rule
        self._status = status
        self._sleep = sleep
        self._decoder = KernelDecoder()
        self._reorder = ReorderBuffer()
        self._fds = fds if fds is not None else FdTable()
        # record --tls: TLS calls become events of layer "tls" (capture/tls_events.py).
        self.tls = (tls_events.TlsEvents(tls_targets, self._fds.identity)
                    if tls_targets is not None else None)
        # The identity last written per pid and fd.
        self._fd_written: dict[int, dict[int, FdIdentity]] = {}
        # Descriptors whose identity in the file is the table's current one,
        # per pid: their events need no check until a note about that pid.
        self._fd_clean: dict[int, set[int]] = {}
        self._peek_ring = getattr(probe, "peek_ring", None)
        self._stop_requested = False
        self._stop_requested_ns = 0
        self._seen_lost = 0
        self._losses_checked_ns = 0
        self._unread = RecordCounts()  # sent by the kernel, never taken: set at the end
        self._unflushed_since: int | None = None  # when the open frame got its first record
        self.stats = Stats(started_ns=boot_ns())

    def stop(self) -> None:
        """Asks the loop to stop, soon: the drain that follows is time-boxed."""
        if not self._stop_requested:
            self._stop_requested_ns = boot_ns()
        self._stop_requested = True

    def _done(self) -> bool:
        rule = self._rule
        if self._stop_requested:
            return True
        if rule.max_events is not None and self.stats.events >= rule.max_events:
            return True
        if rule.child is not None and rule.child.poll() is not None:
            return True
        if rule.duration_s is not None:
            return boot_ns() - self.stats.started_ns >= rule.duration_s * 1e9
        return False

    def run(self) -> Stats:
        """Records until a stop rule fires, then drains, flushes and closes.

        Python's cyclic collector runs from this loop, a pass of the young
        generations every COLLECT_EVERY_NS (all of them every
        FULL_COLLECT_EVERY passes), instead of after every 700 new
        containers: each event makes one (its row), so the automatic
        collector examined every row, ~0.15 us an event; collected once a
        second, most rows are gone before a pass. What the recording makes
        is acyclic; a cycle made anyway lives at most a few seconds.
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if collecting:
                gc.enable()

    def _run(self) -> Stats:
        last_status = 0
        last_collect, collections = boot_ns(), 0
        while not self._done():
            taken = self._step()
            now = boot_ns()
            if now - last_collect >= COLLECT_EVERY_NS:
                collections += 1
                gc.collect(2 if collections % FULL_COLLECT_EVERY == 0 else 1)
                last_collect = now
            if self._writer.tick():
                # A new file of a rotated series: it names each descriptor
                # again before its first event there, so it stands alone.
                self._fd_written.clear()
                self._fd_clean.clear()
            if (taken == 0 and self._unflushed_since is not None
                    and now - self._unflushed_since >= IDLE_FLUSH_NS):
                self._writer.flush()
                self._unflushed_since = None
            if self._status and now - last_status >= STATUS_EVERY_NS:
                self._status(self.stats)
                last_status = now
            if taken < QUIET_STEP_BYTES and not self._done():
                self._sleep(POLL_S)
        # Nothing is captured after the stop; what is in the buffer happened
        # before it and is taken while the budget lasts, the rest counted lost.
        self._probe.stop_producing()
        while self._step() and not (self._stop_requested
                                    and boot_ns() >= self._stop_requested_ns + DRAIN_BUDGET_NS):
            pass
        self._probe.skip_unread()
        sent, decoded = self._probe.handed_over(), self._decoder.stats
        self._unread = RecordCounts(events=sent.events - decoded.events,
                                    fd_notes=sent.fd_notes - decoded.fd_notes)
        self._write_ready(final=True)
        self._writer.close(End(ts_ns=boot_ns(), events=self.stats.events,
                               bytes=self.stats.bytes, lost=self.stats.lost))
        return self.stats

    def _step(self) -> int:
        """Takes one batch from the kernel and writes what is ready; returns bytes taken."""
        try:
            block = self._peek_ring(STEP_BYTES) if self._peek_ring else None
            if block is not None:
                batch = self._decoder.decode_ring_block(block)
                self._probe.release_ring(batch.used)
            else:
                batch = self._decoder.decode_rows(self._probe.read(STEP_BYTES))
        except BadKernelEvent as exc:
            raise ProbeError(f"the BPF program sent a malformed record: {exc}") from None
        if self.tls is not None:  # ties ciphertext syscalls to their TLS call
            self.tls.link(batch.items)
        # Ask /proc now, while the process may still be alive, about
        # descriptors not yet named in the file.
        clean, prefetch = self._fd_clean, self._fds.prefetch
        for pid, fd in batch.fd_keys:
            if fd not in clean.get(pid, ()):
                prefetch(pid, fd)
        self._reorder.push_batch(batch.times, batch.items)
        if batch.tables:
            self._reorder.push_table(EventTable.joined([table for _at, table in batch.tables]))
        self._write_ready(final=False)
        return batch.used

    def _write_ready(self, final: bool) -> None:
        """Writes what the reorder buffer releases (everything, if final)."""
        now = boot_ns()
        ready = self._reorder.drain_batch() if final else self._reorder.release_batch(now)
        tables = self._reorder.drain_tables() if final else self._reorder.release_tables(now)
        if tables:
            self._write_merged(ready, EventTable.joined(tables))
        else:
            self._write_items(ready)
        self.stats.incomplete = self._decoder.stats.incomplete
        self.stats.read_faults = self._decoder.stats.read_faults
        if final or now - self._losses_checked_ns >= LOSS_CHECK_NS:
            self._record_losses()
            self._losses_checked_ns = now

    def _write_merged(self, ready: list, table: EventTable) -> None:
        """Writes the items and the table's events (both in time order) in time order; an
        event dated like an item goes before it."""
        cuts = table.positions_after([item[ROW_TS] if type(item) is tuple else item.ts_ns
                                      for item in ready])
        written, position = 0, 0
        while position < len(ready):
            cut, end = cuts[position], position + 1
            while end < len(ready) and cuts[end] == cut:
                end += 1
            if cut > written:
                self._write_table(table.part(written, cut))
                written = cut
            self._write_items(ready[position:end])
            position = end
        if written < len(table):
            self._write_table(table.part(written))

    def _write_items(self, ready: list) -> None:
        """Writes items in time order: rows in batches, anything else one by one."""
        kinds = list(map(type, ready))
        if kinds.count(tuple) == len(kinds):
            self._write_rows(ready)
        else:
            start = 0
            for position, kind in enumerate(kinds):
                if kind is not tuple:
                    self._write_rows(ready[start:position])
                    item = ready[position]
                    if kind is FdNote:
                        self._note(item)
                    elif kind is TlsKernelEvent and self.tls is not None:
                        self._write_event(self.tls.event(item))
                    elif kind is IoEvent and item.tls_call_ns is not None:
                        self._write_event(item)  # made inside a TLS call: kept whole
                    elif isinstance(item, IoEvent):  # a decoder's event not made a row
                        self._write_rows([(*event_row(item), None)])
                    else:
                        self._writer.write(item)
                    start = position + 1
            self._write_rows(ready[start:])

    def _note(self, note: FdNote) -> None:
        self._fds.apply(note)
        if self.tls is not None:
            self.tls.note(note)
        # The note may change what the process's descriptors are (a fork's
        # note changes the child's): their events are checked again.
        self._fd_clean.pop(note.pid, None)
        if note.op == "inherit":
            self._fd_clean.pop(note.fd2, None)
        # Forget what was written for descriptors that are gone, so the
        # recorder's tables shrink again when processes exit or close.
        if note.op == "close":
            written = self._fd_written.get(note.pid)
            if written is not None:
                written.pop(note.fd, None)
        elif note.op == "exit":
            self._fd_written.pop(note.pid, None)
            self._writer.process_ended(note.pid)

    def _write_rows(self, rows: list[EventRow]) -> None:
        """Writes events in time order, each descriptor named (an fd record) before its first."""
        if not rows:
            return
        rule = self._rule
        if rule.max_events is not None:
            room = rule.max_events - self.stats.events
            if room <= 0:
                return  # past --count: not lost, just not asked for
            rows = rows[:room]
        clean = self._fd_clean
        pids, fds = set(map(_PIDS, rows)), set(map(_FDS, rows))
        # Which (pid, fd) the rows hold: when one side has one value, the
        # other side's values say it without a tuple made per row.
        if len(fds) == 1:
            keys: Iterable[tuple[int, int]] = zip(pids, repeat(*fds))
        elif len(pids) == 1:
            keys = zip(repeat(*pids), fds)
        else:
            keys = set(zip(map(_PIDS, rows), map(_FDS, rows), strict=True))
        unnamed = {key for key in keys if key[1] not in clean.get(key[0], ())}
        if unnamed:
            start = 0
            for position, row in enumerate(rows):
                key = (row[ROW_PID], row[ROW_FD])
                if key in unnamed:
                    self._emit_rows(rows[start:position])
                    start = position
                    self._name(row)
                    unnamed.discard(key)
                    if not unnamed:
                        break
            rows = rows[start:]
        self._emit_rows(rows)

    def _write_table(self, table: EventTable) -> None:
        """_write_rows for events as columns."""
        rule = self._rule
        if rule.max_events is not None:
            room = rule.max_events - self.stats.events
            if room <= 0:
                return  # past --count: not lost, just not asked for
            table = table.part(0, room)
        clean = self._fd_clean
        unnamed = [(pid, fd) for pid, fd in table.fd_keys() if fd not in clean.get(pid, ())]
        if unnamed:
            start = 0
            for position in sorted({table.first_of(pid, fd) for pid, fd in unnamed}):
                self._emit_table(table.part(start, position))
                start = position
                self._name(table.part(position, position + 1).rows()[0])
            table = table.part(start)
        self._emit_table(table)

    def _emit_table(self, table: EventTable) -> None:
        """_emit_rows for events as columns: numbered in file order by the writer."""
        if not len(table):
            return
        data_bytes = self._writer.write_event_table(table, self.stats.events)
        if self._unflushed_since is None:
            self._unflushed_since = boot_ns()
        self.stats.events += len(table)
        self.stats.bytes += data_bytes

    def _name(self, row: EventRow) -> None:
        """Writes an fd record before this event if the file names its descriptor otherwise."""
        pid, fd = row[ROW_PID], row[ROW_FD]
        identity = self._fds.identity(pid, fd)
        written = self._fd_written.setdefault(pid, {})
        last = written.get(fd)
        if last is not identity and last != identity:
            self._writer.write(FdInfo(ts_ns=row[ROW_TS], pid=pid, fd=fd, identity=identity))
            written[fd] = identity
        self._fd_clean.setdefault(pid, set()).add(fd)

    def _write_event(self, event: IoEvent) -> None:
        """One event that travels whole, not as a row (record --tls: its 1.4 fields)."""
        if self._rule.max_events is not None and self.stats.events >= self._rule.max_events:
            return  # past --count: not lost, just not asked for
        self._name(event_row(event))
        # Made by the decoder or tls_events a moment ago, held by nothing else.
        event.__dict__["seq"] = self.stats.events
        self._writer.write(event)
        if self._unflushed_since is None:
            self._unflushed_since = boot_ns()
        self.stats.events += 1
        self.stats.bytes += len(event.data)

    def _emit_rows(self, rows: list[EventRow]) -> None:
        """Numbers the events (in place: `rows` is the caller's own list) and hands them to
        the writer.

        The decoder numbered them in arrival order, which is file order but
        where the reorder moved an event: only those rows are made again.
        """
        if not rows:
            return
        first = self.stats.events
        for position in compress(count(), map(ne, map(_SEQS, rows), count(first))):
            rows[position] = (*rows[position][:ROW_SEQ], first + position)
        data_bytes = self._writer.write_event_rows(rows)
        if self._unflushed_since is None:
            self._unflushed_since = boot_ns()
        self.stats.events += len(rows)
        self.stats.bytes += data_bytes

    def _record_losses(self) -> None:
        kernel = self._probe.lost()
        events = kernel.events + self._unread.events
        if events > self._seen_lost:
            source = "perf" if self._probe.config.use_perf else "ringbuf"
            count = events - self._seen_lost
            self._writer.write(Lost(ts_ns=boot_ns(), count=count, source=source))
            self.stats.lost += count
            self._seen_lost = events
        self.stats.lost_fd_notes = kernel.fd_notes + self._unread.fd_notes
        self.stats.unread_at_stop = self._unread.events
        self.stats.unfollowed = self._probe.unfollowed()


Notify = Callable[[str], None]


def recording_header(config: ProbeConfig, command: tuple[str, ...],
                     tls_targets: list[AttachTarget] | None = None) -> Header:
    """The header of a new capture: this host, now, and what is traced how."""
    anchor_real, anchor_boot = time.time_ns(), boot_ns()
    return Header(
        format_major=FORMAT_MAJOR, format_minor=FORMAT_MINOR, tool_version=__version__,
        host=socket.gethostname(), kernel=platform.release(), start_ns=anchor_real,
        anchor_boot_ns=anchor_boot, anchor_real_ns=anchor_real, argv=tuple(sys.argv),
        filters=Filters(config.comms, config.pids, config.trace_all, config.syscalls,
                        config.follow, command, tls=tls_targets is not None,
                        tls_targets=tls_events.tls_targets_for_header(tls_targets or ())),
        snaplen=config.snaplen, buffer="perf" if config.use_perf else "ringbuf")


def describe_filters(filters: Filters) -> str:
    if filters.all:
        return "every process"
    parts = [f"comm {c}" for c in filters.comms] + [f"pid {p}" for p in filters.pids]
    return ", ".join(parts) + (" and their children" if filters.follow else "")


def summary_line(stats: Stats, output_name: str) -> str:
    text = f"{stats.events} events, {stats.bytes} bytes, {stats.lost} lost"
    if stats.incomplete:
        text += f", {stats.incomplete} with data missing"

    return f"{text} -> {output_name}"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt_start_up(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def summary_warnings(stats: Stats) -> list[str]:
    """What the summary line has no room for: data the kernel could not read, names lost."""
    warnings = []
    if stats.read_faults:
        warnings.append(f"warning: {stats.read_faults} events carry less data than asked: "
                        "the process's memory could not be read (bad pointer or page not "
                        "resident)")
    if stats.unfollowed:
        warnings.append(f"warning: {stats.unfollowed} new processes were not followed: the "
                        "process table was full (--follow-max); their calls are missing")
    if stats.unread_at_stop:
        warnings.append(f"warning: {stats.unread_at_stop} of the lost events were still in the "
                        f"kernel buffer when the stop signal's {DRAIN_BUDGET_NS / 1e9:.1f} s "
                        "drain ended; --duration or --count stops take everything")
    if stats.lost_fd_notes:
        warnings.append(f"warning: {stats.lost_fd_notes} descriptor notes were lost (buffer "
                        "full, or unread at the stop): some descriptors may be unnamed")
    return warnings


def _warn_32bit(config: ProbeConfig, child: HeldCommand | None, notify: Notify) -> None:
    pids = list(config.pids) + (compat32.pids_with_comm(config.comms) if config.comms else [])
    for found in compat32.compat_processes(pids):
        notify(f"warning: process {found} is a 32-bit program; wtrec does not capture "
               "32-bit syscalls, so it will not be captured")
    if child is not None and child.binary and compat32.is_32bit_elf(child.binary):
        notify(f"warning: {child.argv[0]} is a 32-bit program; wtrec does not capture "
               "32-bit syscalls, so it will not be captured")


def record_session(out: BinaryIO | Callable[[Header], CaptureSink], *, output_name: str,
                   config: ProbeConfig,
                   command: tuple[str, ...] = (), duration_s: float | None = None,
                   max_events: int | None = None, notify: Notify,
                   status: Callable[[Stats], None] | None = None) -> tuple[Stats, int]:
    """Records into `out` until a stop rule, a signal or the command's exit.

    `out` is a stream, or a function that makes the writer from the header
    (a rotating one, for a series of files).

    Returns the totals and the command's exit status (0 without a command).
    """
    # A stop during start-up (the compile takes a second) is an interrupt:
    # the held command is killed, never left to run untraced, and the CLI
    # removes the output file it created. Python runs the handler once the
    # compile returns.
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt_start_up)
    child = HeldCommand(list(command)) if command else None
    tls_targets: list[AttachTarget] | None = None
    try:
        if config.tls:
            tls_targets, config = tls_events.prepare(config, command=child, notify=notify)
        probe = Probe(config)
        if tls_targets:
            tls_events.attach(probe, tls_targets, config, command=bool(child), notify=notify)
    except BaseException:
        if child:
            child.abandon()
        raise
    try:
        try:
            _warn_32bit(config, child, notify)
            header = recording_header(config, command, tls_targets)
            try:
                writer = (out(header) if callable(out)
                          else CaptureWriter(out, header, background=True))
            except OSError as exc:
                raise OutputError(f"cannot write {output_name}: {exc.strerror}") from None
        except BaseException:
            if child:
                child.abandon()
            raise
        recording = Recording(probe, writer, StopRule(duration_s, max_events,
                                                      child.process if child else None),
                              status, tls_targets=tls_targets)

        def stop(_signum: int, _frame: object) -> None:
            recording.stop()

        for signum in STOP_SIGNALS:
            signal.signal(signum, stop)
        # What start-up made (bcc, typer, the CLI) lives as long as the
        # recording: frozen, the collector's full passes skip it.
        gc.freeze()
        buffer_name = "perf buffer" if config.use_perf else "ring buffer"
        what = (f"{' '.join(command)} (pid {child.pid}) and its children" if child
                else describe_filters(header.filters))
        notify(f"recording {', '.join(config.syscalls)} of {what} into {output_name} "
               f"({buffer_name}, snaplen {config.snaplen}); Ctrl-C stops")
        if child:
            probe.add_pid(child.pid)
            child.release()
        try:
            stats = recording.run()
        except OSError as exc:
            raise OutputError(f"cannot write {output_name}: {exc.strerror}") from None
        notify(summary_line(stats, output_name))
        if tls_targets and recording.tls is not None and not recording.tls.calls:
            notify(tls_events.no_call_note(tls_targets))
        for warning in summary_warnings(stats):
            notify(warning)
        return stats, (child.exit_status() if child else 0)
    finally:
        probe.close()
