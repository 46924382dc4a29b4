"""Restores timestamp order before events are written.

The perf buffer is one ring per CPU, read one after another, so a thread
that migrates between CPUs can have its writes delivered out of order; and
events are emitted at syscall exit but dated at entry (writes), so even the
single ring buffer delivers them slightly out of time order. Items are held
back until no earlier one can still arrive: those older than the poll that
delivered them by more than `hold_ns`.

`push`/`release` take and give one item at a time (a heap); the recorder
uses `push_batch`/`release_batch`, which hold batches as sorted chunks
(times, items), in time order and not overlapping. A batch arrives in time
order but for a few neighbours, and later than what is held but for those:
it is sorted on its own (a C sort, only if it needs one) and becomes the
last chunk, merged only with the held items later than its first. Releasing
takes whole chunks and cuts one by `bisect`. So the work per batch does not
grow with what is held (50 ms of events: 50,000 at a million a second).
"""

import heapq
from bisect import bisect_right
from collections.abc import Iterable
from itertools import chain


def _in_time_order(times: list[int], items: list) -> tuple[list[int], list]:
    """Both lists in time order; items of equal times keep their order (a stable sort)."""
    if times == sorted(times):
        return times, items
    order = sorted(range(len(times)), key=times.__getitem__)
    return list(map(times.__getitem__, order)), list(map(items.__getitem__, order))


class ReorderBuffer:
    """Holds timestamped items until nothing earlier can still arrive."""

    def __init__(self, hold_ns: int = 50_000_000):
        self._hold_ns = hold_ns
        self._heap: list[tuple[int, int, object]] = []
        self._arrival = 0
        # push_batch's chunks: each sorted by time (then arrival), each
        # starting no earlier than the one before it ends.
        self._chunks: list[tuple[list[int], list]] = []

    def __len__(self) -> int:
        return len(self._heap) + sum(len(items) for _times, items in self._chunks)

    def push_batch(self, times: list[int], items: list) -> None:
        """Items with their times, in arrival order (among equal times it is kept)."""
        if not items:
            return
        times, items = _in_time_order(times, items)
        chunks = self._chunks
        first = times[0]
        if chunks and chunks[-1][0][-1] > first:
            # Reaches back into what is held: what is held after its first
            # item (a few neighbours, usually) is sorted again with it; the
            # rest of the held chunks stays as it is.
            later_times: list[int] = []
            later_items: list = []
            while chunks and chunks[-1][0][-1] > first:
                held_times, held_items = chunks[-1]
                cut = bisect_right(held_times, first)
                later_times[:0] = held_times[cut:]
                later_items[:0] = held_items[cut:]
                if cut:
                    del held_times[cut:], held_items[cut:]
                    break
                chunks.pop()
            times, items = _in_time_order(later_times + times, later_items + items)
        chunks.append((times, items))

    def release_batch(self, now_ns: int) -> list:
        """What push_batch holds that is old enough, oldest first."""
        horizon = now_ns - self._hold_ns
        chunks = self._chunks
        ready: list = []
        while chunks and chunks[0][0][-1] <= horizon:
            ready += chunks.pop(0)[1]
        if chunks:
            times, items = chunks[0]
            cut = bisect_right(times, horizon)
            if cut:
                ready += items[:cut]
                chunks[0] = (times[cut:], items[cut:])
        return ready

    def drain_batch(self) -> list:
        """Everything push_batch holds, in order."""
        ready = list(chain.from_iterable(items for _times, items in self._chunks))
        self._chunks.clear()
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
