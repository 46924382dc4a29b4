"""Live eBPF: a recorder killed with -9 under load leaves what it was handed on disk."""

import os
import signal
import subprocess
import sys
import time

import pytest
from live_helpers import Recorder

from wtrec.format import CaptureReader
from wtrec.records import IoEvent

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live")]

# Numbered writes, each carrying the boot-clock time it was made at, paced
# to a rate: a slow one (a frame closes by age, not by its record count)
# and a busy one (within what the recorder takes on a loaded 2-core machine).
PACED = r"""
import os, sys, time
rate = int(sys.argv[1])
fd = os.open(os.devnull, os.O_WRONLY)
sys.stdin.readline()
start = time.monotonic()
n = 0
while True:
    for _ in range(100):
        os.write(fd, b"%09d %020d\n" % (n, time.clock_gettime_ns(time.CLOCK_BOOTTIME)))
        n += 1
    ahead = n / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
"""
@pytest.mark.parametrize("rate", [500, 20_000])
def test_a_recorder_killed_under_load_has_the_last_second_on_disk(workdir, rate):
    """SIGKILL: no drain, no end record, no index. Every write made until a second before
    the kill is in the file (frames close after half a second), in order, none missing."""
    out = os.path.join(workdir, "killed.wtrace")
    writer = subprocess.Popen([sys.executable, "-c", PACED, str(rate)], stdin=subprocess.PIPE)
    recorder = Recorder("-p", str(writer.pid), "-o", out)
    try:
        writer.stdin.write(b"go\n")
        writer.stdin.flush()
        time.sleep(3)  # the load runs: a duration, not a condition to wait for
        killed_at = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        recorder.proc.send_signal(signal.SIGKILL)
        recorder.proc.wait(10)
    finally:
        writer.kill()
        writer.wait()
        recorder.stop()
    with open(out, "rb") as stream:
        reader = CaptureReader(stream)
        events = [r for r in reader if isinstance(r, IoEvent)]
    assert reader.truncated  # killed: no end record
    numbers = [int(e.data.split()[0]) for e in events if e.fd > 2]
    assert numbers == list(range(len(numbers))) and len(numbers) > rate  # none missing
    last_made = int(events[-1].data.split()[1])
    behind = (killed_at - last_made) / 1e9
    assert behind < 1.0, f"the file ends with a write made {behind:.2f} s before the kill"
