"""Live eBPF: the recorder under load and over time (wake policy, memory, stops, state)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import wtrec_cmd
from live_helpers import Recorder

from wtrec.format import CaptureReader
from wtrec.records import End, FdInfo, IoEvent

pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live")]

MIB = 1 << 20


def events_in(path) -> list[IoEvent]:
    """The events of a capture, also while it is still being written (none before it has
    its first frame: the recorder creates the file before it writes the header)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    with open(path, "rb") as stream:
        return [r for r in CaptureReader(stream) if isinstance(r, IoEvent)]


def wait_for(condition, timeout: float, what: str, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


TRICKLE = r"""
import os, sys
for line in sys.stdin:                    # one write per line the test sends
    os.write(1, line.encode())
"""


@pytest.mark.parametrize("buffer_args", [[], ["--perf-buffer"]], ids=["ringbuf", "perf"])
def test_a_trickle_of_events_reaches_the_file_within_a_second(workdir, buffer_args):
    """The BPF program never wakes the reader: the recorder's timer must still pick
    up a lone event and put it on disk promptly, while recording."""
    out = os.path.join(workdir, "trickle.wtrace")
    writer = subprocess.Popen([sys.executable, "-c", TRICKLE], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True, bufsize=1)
    recorder = Recorder("-p", str(writer.pid), "-o", out, *buffer_args)
    try:
        for n in range(3):
            marker = f"trickle {n}\n"
            wanted = marker.encode()
            sent = time.monotonic()
            writer.stdin.write(marker)
            writer.stdin.flush()
            wait_for(lambda m=wanted: any(e.data == m for e in events_in(out)), 5,
                     f"event {n} in the file")
            assert time.monotonic() - sent < 1.0, f"event {n} took over a second to reach the file"
    finally:
        writer.stdin.close()
        writer.wait(10)
        recorder.stop()
    assert recorder.proc.returncode == 0
    assert [e.data for e in events_in(out)] == [f"trickle {n}\n".encode() for n in range(3)]


NONSTOP = r"""
import os
data = b"y" * 64
fd = os.open(os.devnull, os.O_WRONLY)
while True:
    os.write(fd, data)
"""


@pytest.mark.parametrize("buffer_args", [[], ["--perf-buffer"], ["-s", "max"]],
                         ids=["ringbuf", "perf", "snaplen-max"])
def test_a_writer_without_pause_keeps_memory_bounded_and_sigint_stops_within_a_second(
        workdir, buffer_args):
    out = os.path.join(workdir, "nonstop.wtrace")
    writer = subprocess.Popen([sys.executable, "-c", NONSTOP])
    recorder = Recorder("-p", str(writer.pid), "-o", out, *buffer_args)
    try:
        # Let the writer run long enough to fill the kernel buffer many times over.
        peak = 0
        wait_for(lambda: os.path.getsize(out) > 4 * MIB, 60, "4 MiB of capture on disk")
        for _ in range(30):
            peak = max(peak, rss_bytes(recorder.proc.pid))
            time.sleep(0.1)
        asked = time.monotonic()
        recorder.proc.send_signal(signal.SIGINT)
        recorder.proc.wait(30)
        stopped_in = time.monotonic() - asked
    finally:
        writer.kill()
        writer.wait()
        recorder.stop()
    assert recorder.proc.returncode == 0
    assert peak < 300 * MIB, f"recorder RSS reached {peak / MIB:.0f} MiB"
    assert stopped_in < 1.0, f"SIGINT took {stopped_in:.2f} s to end the recording"
    with open(out, "rb") as stream:
        reader = CaptureReader(stream)
        records = list(reader)
    end = records[-1]
    events = [r for r in records if isinstance(r, IoEvent)]
    assert isinstance(end, End) and not reader.truncated
    assert end.events == len(events) > 1000
    assert all(e.data == b"y" * 64 for e in events)


FORKER = r"""
import os, sys
def children(n):
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.write(fd, b"child")
            os._exit(0)
        os.waitpid(pid, 0)
    fd = os.open(os.devnull, os.O_WRONLY)
    os.write(fd, b"batch done")             # a marker the test waits for
    os.close(fd)
children(100)
sys.stdin.readline()
children(int(sys.argv[1]))
sys.stdin.readline()
"""


def test_state_of_exited_processes_is_freed(workdir):
    """RSS after 20,000 short-lived traced processes is within a few MiB of after 100."""
    out = os.path.join(workdir, "forks.wtrace")
    many = 20_000
    recorder = subprocess.Popen(
        wtrec_cmd("record", "-q", "--force", "-o", out, "--", sys.executable, "-c", FORKER,
                  str(many - 100)), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def markers() -> int:
            return sum(e.data == b"batch done" for e in events_in(out))

        wait_for(lambda: markers() >= 1, 60, "the first 100 children", step=0.1)
        after_100 = rss_bytes(recorder.pid)
        recorder.stdin.write(b"go\n")
        recorder.stdin.flush()
        wait_for(lambda: markers() >= 2, 600, f"{many} children", step=0.5)
        after_many = rss_bytes(recorder.pid)
        recorder.stdin.write(b"done\n")
        recorder.stdin.close()
        assert recorder.wait(60) == 0, recorder.stderr.read()
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    growth = after_many - after_100
    assert growth < 4 * MIB, f"RSS grew {growth / MIB:.1f} MiB over {many - 100} processes"
    events = events_in(out)
    assert sum(e.data == b"child" for e in events) == many


BLOCKED = r"""
import os, sys, time
read_end, write_end = os.pipe()
sys.stdin.readline()                      # the recorder is ready
pid = os.fork()
if pid == 0:                              # the reader: drains the pipe late
    os.close(write_end)
    time.sleep(0.4)
    while os.read(read_end, 1 << 20):
        pass
    os._exit(0)
os.close(read_end)
writer = os.fork()
if writer == 0:                           # blocks: 1 MiB into a 64 KiB pipe
    os.write(write_end, b"B" * (1 << 20))
    os._exit(0)
os.close(write_end)
time.sleep(0.05)
null = os.open(os.devnull, os.O_WRONLY)
for i in range(20):                       # later calls that return at once
    os.write(null, b"tick %02d" % i)
    time.sleep(0.01)
os.waitpid(writer, 0)
os.waitpid(pid, 0)
"""


def test_a_write_that_blocked_is_filed_in_time_order(workdir):
    """Events are dated at syscall exit, so a write blocked ~0.4 s on a full pipe
    comes after the quick writes made meanwhile, and the file is in time order."""
    out = os.path.join(workdir, "blocked.wtrace")
    result = subprocess.run(
        wtrec_cmd("record", "-q", "--force", "-s", "max", "-o", out, "--", sys.executable,
                  "-c", BLOCKED), input="go\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    events = events_in(out)
    times = [e.ts_ns for e in events]
    assert times == sorted(times)
    names = [e.data[:7] for e in events]
    ticks = [n for n in names if n.startswith(b"tick")]
    assert len(ticks) == 20 and names[-1] == b"B" * 7  # the blocked write ended last


OPEN_WRITE_CLOSE = r"""
import os, sys
sys.stdin.readline()
base = sys.argv[1]
for i in range(int(sys.argv[2])):
    path = f"{base}/f{i % 50}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, path.encode())           # the data names the file it goes to
    os.close(fd)
"""


def test_lost_fd_notes_make_names_unknown_never_wrong(workdir):
    """With a tiny buffer, fd notes are lost: no event may carry another file's name,
    and the lost notes are counted."""
    out = os.path.join(workdir, "names.wtrace")
    files = os.path.join(workdir, "files")
    os.mkdir(files)
    result = subprocess.run(
        wtrec_cmd("record", "-q", "--force", "--buffer-size", "16K", "-o", out, "--",
                  sys.executable, "-c", OPEN_WRITE_CLOSE, files, "30000"),
        input="go\n", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "descriptor notes were lost" in result.stderr
    with open(out, "rb") as stream:
        records = list(CaptureReader(stream))
    current: dict[tuple[int, int], object] = {}
    wrong, unknown, right = [], 0, 0
    for record in records:
        if isinstance(record, FdInfo):
            current[(record.pid, record.fd)] = record.identity
        elif isinstance(record, IoEvent) and record.data.startswith(files.encode()):
            identity = current.get((record.pid, record.fd))
            if identity is None or identity.kind == "unknown":
                unknown += 1
            elif identity.path == record.data.decode():
                right += 1
            else:
                wrong.append((identity, record.data))
    assert not wrong, f"{len(wrong)} events named wrongly, e.g. {wrong[:3]}"
    assert right > 0 and unknown > 0


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except FileNotFoundError:
        return []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_during_start_up_removes_the_file_and_kills_the_held_command(workdir, signum):
    out = os.path.join(workdir, f"early-{signum}.wtrace")
    marker = os.path.join(workdir, f"ran-{signum}")
    recorder = subprocess.Popen(
        wtrec_cmd("record", "-q", "-o", out, "--", "sh", "-c", f"touch {marker}"),
        stderr=subprocess.PIPE)
    try:
        # The held command exists before the BPF program is compiled: stop now.
        wait_for(lambda: children_of(recorder.pid), 30, "the held command")
        recorder.send_signal(signum)
        recorder.wait(30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    assert recorder.returncode == 130, recorder.stderr.read()
    assert not os.path.exists(out), "the empty capture was left behind"
    assert not os.path.exists(marker), "the held command ran untraced"


THREADS_THEN_CHILDREN = r"""
import os, sys, threading
done = threading.Event()
threads = [threading.Thread(target=done.wait) for _ in range(int(sys.argv[1]))]
for thread in threads:
    thread.start()
children = []
for i in range(int(sys.argv[2])):         # processes alive at once
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write_end)
        os.read(read_end, 1)              # wait until all exist, then write
        os.write(1, b"child %d\n" % i)
        os._exit(0)
    os.close(read_end)
    children.append((pid, write_end))
for pid, write_end in children:
    os.write(write_end, b"g")
for pid, _ in children:
    os.waitpid(pid, 0)
done.set()
"""


def test_follow_tracks_processes_not_threads_and_counts_what_does_not_fit(workdir):
    out = os.path.join(workdir, "follow.wtrace")
    # 100 threads and 20 children in a table of 40: threads take no room.
    result = subprocess.run(
        wtrec_cmd("record", "-q", "--force", "--follow-max", "40", "-o", out, "--",
                  sys.executable, "-c", THREADS_THEN_CHILDREN, "100", "20"),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written = sorted(e.data for e in events_in(out) if e.data.startswith(b"child"))
    assert written == sorted(b"child %d\n" % i for i in range(20))
    assert "not followed" not in result.stderr
    # 60 children alive at once in a table of 40: the rest are counted and said.
    result = subprocess.run(
        wtrec_cmd("record", "-q", "--force", "--follow-max", "40", "-o", out, "--",
                  sys.executable, "-c", THREADS_THEN_CHILDREN, "0", "60"),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    captured = sum(e.data.startswith(b"child") for e in events_in(out))
    assert f"warning: {60 - captured} new processes were not followed" in result.stderr
    assert 0 < captured < 60
