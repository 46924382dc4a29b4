"""Restores timestamp order before events are written.

The perf buffer is one ring per CPU, read one after another, so a thread
that migrates between CPUs can have its writes delivered out of order; and
events are emitted at syscall exit but dated at entry (writes), so even the
single ring buffer delivers them slightly out of time order. Items are held
back until no earlier one can still arrive: those older than the poll that
delivered them by more than `hold_ns`.

`push`/`release` take and give one item at a time (a heap); the recorder
uses `push_batch`/`release_batch`, which keep a sorted list of (ts_ns,
item) pairs: a batch arrives nearly sorted, so sorting it into what is held
is a C merge, and releasing is a slice, with no Python code per item.
"""

import heapq
from bisect import bisect_right
from collections.abc import Iterable
from operator import itemgetter

_TIME = itemgetter(0)
_ITEM = itemgetter(1)


class ReorderBuffer:
    """A min-heap of timestamped items (anything with ts_ns) keyed by (ts_ns, arrival)."""

    def __init__(self, hold_ns: int = 50_000_000):
        self._hold_ns = hold_ns
        self._heap: list[tuple[int, int, object]] = []
        self._arrival = 0
        self._held: list[tuple[int, object]] = []  # sorted by time, then arrival

    def __len__(self) -> int:
        return len(self._heap) + len(self._held)

    def push_batch(self, times: list[int], items: list) -> None:
        """Items with their times, in arrival order (a stable sort keeps it among equal times)."""
        if items:
            self._held += zip(times, items, strict=True)
            self._held.sort(key=_TIME)

    def release_batch(self, now_ns: int) -> list:
        """What push_batch holds that is old enough, oldest first."""
        held = self._held
        cut = bisect_right(held, now_ns - self._hold_ns, key=_TIME)
        if not cut:
            return []
        ready = list(map(_ITEM, held[:cut]))
        del held[:cut]
        return ready

    def drain_batch(self) -> list:
        """Everything push_batch holds, in order."""
        ready = list(map(_ITEM, self._held))
        self._held.clear()
        return ready

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
