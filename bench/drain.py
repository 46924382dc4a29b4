"""wtrec's BPF programs with a consumer that only empties the ring buffer: a floor for record.

bench/run.py starts this beside a load to measure what "every traced call
copied into a ring buffer" costs on its own: the same programs, filters and
32 MiB ring as `wtrec record -c COMM [--read]` (the same ProbeConfig, so the
same compiled program from the cache), and a consumer that wakes on
`wtrec.record.POLL_S`, copies out whatever the kernel has handed over (the
memory traffic the recorder has too) and releases it: no decode, no Python
per event, no file. Whatever load the recorder adds beyond this is its
consumer's. (A recorder stopped with SIGSTOP is no such floor: once its ring
is full, each refused reservation is cheaper than a stored one.)

Prints "draining" on stderr once attached; on SIGINT or SIGTERM it detaches
and prints one JSON line on stdout: events handed over and lost (the BPF
side's own counts), steps, and bytes released. Root, from the checkout:
`.venv/bin/python bench/drain.py -c COMM [--read]`.
"""

import argparse
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wtrec.capture.probe import PAGE_SIZE, Probe, ProbeConfig
from wtrec.cli.record_command import parse_syscalls
from wtrec.record import POLL_S


def drain(probe: Probe, stopping: list[bool]) -> tuple[int, int]:
    """Empties the ring every POLL_S until `stopping[0]`; returns (steps, bytes released)."""
    everything = probe.config.buffer_pages() * PAGE_SIZE  # all the ring can hold
    steps = released = 0
    while not stopping[0]:
        block = probe.peek_ring(everything)
        if block is None:
            raise SystemExit("drain.py: the probe has no ring buffer (perf buffer mode)")
        # The block ends at the producer position: a record boundary, so releasing it
        # whole is exact (a record still being written there is released before its
        # commit, harmless here: nothing reads it).
        probe.release_ring(len(block))
        steps += 1
        released += len(block)
        time.sleep(POLL_S)
    return steps, released


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--comm", action="append", required=True)
    parser.add_argument("--read", action="store_true", help="also the read family, as record --read")
    args = parser.parse_args()
    config = ProbeConfig(comms=tuple(args.comm), syscalls=parse_syscalls(None, args.read))
    stopping = [False]

    def stop(_signum: int, _frame: object) -> None:
        stopping[0] = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    probe = Probe(config)
    try:
        print("draining", file=sys.stderr, flush=True)
        steps, released = drain(probe, stopping)
        probe.stop_producing()
        rest = probe.peek_ring(config.buffer_pages() * PAGE_SIZE) or b""
        probe.release_ring(len(rest))
        result = {"handed_over": probe.handed_over().events, "lost": probe.lost().events,
                  "steps": steps + 1, "bytes": released + len(rest)}
    finally:
        probe.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
