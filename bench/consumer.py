"""The recorder's consumer alone: decode, order, name, pack, compress and write, fed from memory.

No kernel and no root: kernel records are built byte for byte as the BPF
program lays them out in its ring buffer, and a `Recording` takes them
through a stand-in probe, writing a real capture to /dev/null. This is the
floor of the user-space side: the rate the consumer reaches when nothing
else wants the CPU. Run: `.venv/bin/python bench/consumer.py`.

Loads: `writes` (4 processes, 64-byte writes to one fd each, the paced load
of bench/run.py) and `redis` (20 connections, a 36-byte read of a GET and
its 5-byte reply in turn: what `record --read -c redis-server` sees under
`redis-benchmark -t get`; redis 7 makes no read that finds nothing there). CPU time counts both the
recorder's threads (the frame writer compresses in the second); the
main thread's share, where the per-event Python runs, is shown apart.

Events are dated `--rate` apart and the recorder's clock follows the bytes
handed over (as if they arrived at that rate), so its reorder holds what a
live one holds (50 ms of events: 50,000 at a million a second); one pair of
neighbours in `--swapped` arrives in the wrong order, as two CPUs writing one
ring buffer do.
"""

import argparse
import bisect
import gc
import os
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wtrec import record
from wtrec.capture.fd_table import FdTable
from wtrec.capture.kernel_records import EVENT_HEADER, KIND_EVENT, SYSCALL_IDS
from wtrec.capture.probe import ProbeConfig, RecordCounts
from wtrec.format import CaptureWriter
from wtrec.record import POLL_S, Recording, StopRule, boot_ns, recording_header
from wtrec.records import FdIdentity

STEP = 256 << 10


def kernel_event(ts_ns: int, pid: int, fd: int, data: bytes, *, syscall: str, ret: int,
                 room: int) -> bytes:
    """One event record in its ring buffer slot: ring header, event header, data, padding."""
    head = EVENT_HEADER.pack(KIND_EVENT, 0, ts_ns, ts_ns, len(data), ret, pid, pid, 0, fd,
                             len(data), SYSCALL_IDS[syscall], syscall == "read",
                             b"wloop".ljust(16, b"\0"))
    record = head + data.ljust(room, b"\0")
    return struct.pack("<II", len(record), 0) + record + bytes(-len(record) % 8)


def writes_load(events: int, start_ns: int, spacing_ns: int) -> list[bytes]:
    return [kernel_event(start_ns + i * spacing_ns, 1000 + i % 4, 3, b"x" * 64, syscall="write", ret=64,
                         room=64) for i in range(events)]


def redis_load(events: int, start_ns: int, spacing_ns: int) -> list[bytes]:
    records = []
    for i in range(events):
        connection, turn = i // 2 % 20, i % 2
        if turn == 0:
            data, syscall = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:__rand_int__\r\n", "read"
        else:
            data, syscall = b"$-1\r\n", "write"
        records.append(kernel_event(start_ns + i * spacing_ns, 2000, 10 + connection, data,
                                    syscall=syscall, ret=len(data), room=64))
    return records


class MemoryProbe:
    """Hands out the prepared ring buffer bytes a step at a time, as Probe.peek_ring does,
    and keeps the clock: the time of the last record handed over (then a poll's worth more
    per empty step, so what the reorder holds comes out at the end)."""

    config = ProbeConfig()

    def __init__(self, records: list[bytes], start_ns: int, spacing_ns: int):
        self._ring = b"".join(records)
        self._ends = [0] * len(records)
        end = 0
        for n, one in enumerate(records):
            end += len(one)
            self._ends[n] = end
        self._position = 0
        self._events = len(records)
        self._start_ns, self._spacing_ns, self._idle_ns = start_ns, spacing_ns, 0

    def now(self) -> int:
        handed = bisect.bisect_right(self._ends, self._position)
        return self._start_ns + handed * self._spacing_ns + self._idle_ns

    def peek_ring(self, max_bytes: int) -> bytes:
        if self._position == len(self._ring):
            self._idle_ns += int(POLL_S * 1e9)
        return self._ring[self._position:self._position + max_bytes]

    def release_ring(self, used: int) -> None:
        self._position += used

    def read(self, max_bytes: int) -> list[bytes]:
        return []

    def stop_producing(self) -> None:
        pass

    def skip_unread(self) -> None:
        pass

    def lost(self) -> RecordCounts:
        return RecordCounts()

    def handed_over(self) -> RecordCounts:
        return RecordCounts(events=self._events)

    def unfollowed(self) -> int:
        return 0


def run_once(load: str, events: int, rate: int, swapped: int) -> tuple[float, float]:
    """CPU nanoseconds per event of one recording of `events` events: both threads, and
    the main thread alone."""
    make = writes_load if load == "writes" else redis_load
    start_ns, spacing_ns = boot_ns(), 10**9 // rate
    records = make(events, start_ns, spacing_ns)
    if swapped:
        for first in range(0, events - 1, swapped):
            records[first], records[first + 1] = records[first + 1], records[first]
    probe = MemoryProbe(records, start_ns, spacing_ns)
    record.boot_ns = probe.now  # the recorder's clock (restored below)
    gc.collect()
    gc.freeze()  # the prepared records, as record_session freezes what start-up made
    with open(os.devnull, "wb") as out:
        writer = CaptureWriter(out, recording_header(ProbeConfig(), ()), background=True)
        fds = FdTable(resolver=lambda _pid, _fd: FdIdentity("file", path="/dev/null"))
        recording = Recording(probe, writer, StopRule(max_events=events), fds=fds,
                              sleep=lambda _s: None)
        started, started_main = time.process_time_ns(), time.thread_time_ns()
        stats = recording.run()
        used = time.process_time_ns() - started
        used_main = time.thread_time_ns() - started_main
    record.boot_ns = boot_ns
    gc.unfreeze()
    assert stats.events == events, stats
    return used / events, used_main / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=int, default=1_000_000,
                        help="events per second the records' times say (sets what the "
                             "reorder holds)")
    parser.add_argument("--swapped", type=int, default=100,
                        help="one pair of neighbours in this many arrives swapped (0: none)")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print("| load | CPU ns/event, both threads (median) | main thread | events/s of one core |\n"
          "|---|---:|---:|---:|")
    for load in ("writes", "redis"):
        runs = [run_once(load, args.events, args.rate, args.swapped) for _ in range(args.repeat)]
        ns = statistics.median(both for both, _main in runs)
        main_ns = statistics.median(main for _both, main in runs)
        print(f"| {load} | {ns:.0f} | {main_ns:.0f} | {1e9 / ns:,.0f} |")


if __name__ == "__main__":
    main()
