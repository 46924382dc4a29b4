"""A recording session: moves events from a probe into a writer until told to stop.

It knows where bytes come from (anything with the Probe interface) and is
handed a CaptureWriter; it knows nothing of files, bcc or the terminal.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from wtrec.errors import ProbeError
from wtrec.format import CaptureWriter
from wtrec.kernel_event import BadKernelEvent, decode_event
from wtrec.ordering import ReorderBuffer
from wtrec.records import End, Lost

POLL_MS = 100
STATUS_EVERY_NS = 500_000_000


def boot_ns() -> int:
    """CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns()."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


@dataclass
class Stats:
    """What the live status line and the final summary report."""

    events: int = 0
    bytes: int = 0
    lost: int = 0
    started_ns: int = 0

    def rate(self, now_ns: int) -> float:
        elapsed = (now_ns - self.started_ns) / 1e9
        return self.events / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class StopRule:
    """When to stop besides a signal: after so long, or after so many events."""

    duration_s: float | None = None
    max_events: int | None = None


class Recording:
    """Drives one probe into one writer; `stop()` may be called from a signal handler."""

    def __init__(self, probe, writer: CaptureWriter, rule: StopRule,
                 status: Callable[[Stats], None] | None = None, ordered: bool = False):
        self._probe = probe
        self._writer = writer
        self._rule = rule
        self._status = status
        self._reorder = ReorderBuffer() if ordered else None
        self._stop_requested = False
        self._seen_kernel_lost = 0
        self._seen_perf_lost = 0
        self.stats = Stats(started_ns=boot_ns())

    def stop(self) -> None:
        self._stop_requested = True

    def _done(self) -> bool:
        rule = self._rule
        if self._stop_requested:
            return True
        if rule.max_events is not None and self.stats.events >= rule.max_events:
            return True
        if rule.duration_s is not None:
            return boot_ns() - self.stats.started_ns >= rule.duration_s * 1e9
        return False

    def run(self) -> Stats:
        """Records until a stop rule fires, then drains, flushes and closes."""
        last_status = 0
        while not self._done():
            self._probe.poll(POLL_MS)
            self._move_events(final=False)
            self._writer.tick()
            now = boot_ns()
            if self._status and now - last_status >= STATUS_EVERY_NS:
                self._status(self.stats)
                last_status = now
        # Drain what is already in the buffer: those events happened before the stop.
        self._probe.poll(0)
        self._move_events(final=True)
        self._writer.close(End(ts_ns=boot_ns(), events=self.stats.events,
                               bytes=self.stats.bytes, lost=self.stats.lost))
        return self.stats

    def _move_events(self, final: bool) -> None:
        raw_events = self._probe.raw_events
        while raw_events:
            raw = raw_events.popleft()
            try:
                event = decode_event(raw)
            except BadKernelEvent as exc:
                raise ProbeError(f"the BPF program sent a malformed event: {exc}") from None
            if self._reorder is None:
                self._write(event)
            else:
                self._reorder.push(event)
        if self._reorder is not None:
            ready = self._reorder.drain() if final else self._reorder.release(boot_ns())
            for event in ready:
                self._write(event)
        self._record_losses()

    def _write(self, event) -> None:
        rule = self._rule
        if rule.max_events is not None and self.stats.events >= rule.max_events:
            return  # past --count: not lost, just not asked for
        self._writer.write(event)
        self.stats.events += 1
        self.stats.bytes += len(event.data)

    def _record_losses(self) -> None:
        kernel_lost = self._probe.kernel_lost()
        perf_lost = self._probe.perf_lost
        now = boot_ns()
        source = "perf" if self._probe.config.use_perf else "ringbuf"
        if kernel_lost > self._seen_kernel_lost:
            self._lost(now, kernel_lost - self._seen_kernel_lost, source)
            self._seen_kernel_lost = kernel_lost
        if perf_lost > self._seen_perf_lost:
            self._lost(now, perf_lost - self._seen_perf_lost, "perf")
            self._seen_perf_lost = perf_lost

    def _lost(self, now: int, count: int, source: str) -> None:
        self._writer.write(Lost(ts_ns=now, count=count, source=source))
        self.stats.lost += count
