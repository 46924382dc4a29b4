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

Runs of events decoded as columns (EventTables) are held the same way but
apart (`push_table`/`release_tables`), sorted by numpy; the recorder merges
what both release by time as it writes. Among equal times, an event of a
table goes before an item of the other kind (it cannot be told which the
kernel sent first).
"""

import heapq
from bisect import bisect_right
from collections.abc import Iterable
from itertools import chain

from wtrec.wtrace.event_table import EventTable


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
        self._tables: list[EventTable] = []  # push_table's chunks, the same way

    def __len__(self) -> int:
        return (len(self._heap) + sum(len(items) for _times, items in self._chunks)
                + sum(map(len, self._tables)))

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

    def push_table(self, table: EventTable) -> None:
        """push_batch for events decoded as columns (capture/kernel_records.py's runs),
        held apart from the other items in chunks of the same kind; what the two
        release is merged by time when written."""
        if not len(table):
            return
        table = table.in_time_order()
        chunks = self._tables
        first = table.first_time
        if chunks and chunks[-1].last_time > first:
            later: list[EventTable] = []
            while chunks and chunks[-1].last_time > first:
                held = chunks[-1]
                cut = held.count_until(first)
                later.insert(0, held.part(cut))
                if cut:
                    chunks[-1] = held.part(0, cut)
                    break
                chunks.pop()
            table = EventTable.joined([*later, table]).in_time_order()
        chunks.append(table)

    def release_tables(self, now_ns: int) -> list[EventTable]:
        """What push_table holds that is old enough, oldest first."""
        horizon = now_ns - self._hold_ns
        chunks = self._tables
        ready: list[EventTable] = []
        while chunks and chunks[0].last_time <= horizon:
            ready.append(chunks.pop(0))
        if chunks:
            cut = chunks[0].count_until(horizon)
            if cut:
                ready.append(chunks[0].part(0, cut))
                chunks[0] = chunks[0].part(cut)
        return ready

    def drain_tables(self) -> list[EventTable]:
        """Everything push_table holds, in order."""
        ready, self._tables = self._tables, []
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
