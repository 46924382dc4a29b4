"""Restores timestamp order before events are written.

The perf buffer is one ring per CPU, read one after another, so a thread
that migrates between CPUs can have its writes delivered out of order; and
events are emitted at syscall exit but dated at entry (writes), so even the
single ring buffer delivers them slightly out of time order. Items are held
back until no earlier one can still arrive: those older than the poll that
delivered them by more than `hold_ns`.
"""

import heapq
from collections.abc import Iterable


class ReorderBuffer:
    """A min-heap of timestamped items (anything with ts_ns) keyed by (ts_ns, arrival)."""

    def __init__(self, hold_ns: int = 50_000_000):
        self._hold_ns = hold_ns
        self._heap: list[tuple[int, int, object]] = []
        self._arrival = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, event) -> None:
        heapq.heappush(self._heap, (event.ts_ns, self._arrival, event))
        self._arrival += 1

    def release(self, now_ns: int) -> Iterable:
        """Events old enough that nothing earlier can still be in flight."""
        horizon = now_ns - self._hold_ns
        while self._heap and self._heap[0][0] <= horizon:
            yield heapq.heappop(self._heap)[2]

    def drain(self) -> Iterable:
        """Everything, in order; for when the buffers have been emptied."""
        while self._heap:
            yield heapq.heappop(self._heap)[2]
