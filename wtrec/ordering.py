"""Restores timestamp order across per-CPU perf buffers.

The perf buffer is one ring per CPU, read one after another, so a thread
that migrates between CPUs can have its writes delivered out of order.
Events are held back until no earlier event can still arrive: those older
than the poll that delivered them by more than `hold_ns`.
"""

import heapq
from collections.abc import Iterable

from wtrec.records import WriteEvent


class ReorderBuffer:
    """A min-heap of events keyed by (timestamp, arrival)."""

    def __init__(self, hold_ns: int = 50_000_000):
        self._hold_ns = hold_ns
        self._heap: list[tuple[int, int, WriteEvent]] = []
        self._arrival = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, event: WriteEvent) -> None:
        heapq.heappush(self._heap, (event.ts_ns, self._arrival, event))
        self._arrival += 1

    def release(self, now_ns: int) -> Iterable[WriteEvent]:
        """Events old enough that nothing earlier can still be in flight."""
        horizon = now_ns - self._hold_ns
        while self._heap and self._heap[0][0] <= horizon:
            yield heapq.heappop(self._heap)[2]

    def drain(self) -> Iterable[WriteEvent]:
        """Everything, in order; for when the buffers have been emptied."""
        while self._heap:
            yield heapq.heappop(self._heap)[2]
