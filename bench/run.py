"""Benchmark of the recorder: per-call cost, a real server, sustained rate, start-up.

Run as root from the checkout: `.venv/bin/python bench/run.py`. In one run:

1. per call: bench/writeloop (N 64-byte write()s to /dev/null, timed inside
   the loop) untraced; under a do-nothing BPF program on wtrec's attach
   points (raw tracepoints sys_enter and sys_exit returning at once: the
   floor any syscall tracer pays); under a program that does the least a
   capture can (the ring buffer floor: at sys_exit, the saved registers, a
   comm check, one clock read, a 144-byte reservation in a 32 MiB ring
   buffer like wtrec's, the 64 bytes copied, submitted without wakeup);
   under `wtrec record` with the ring buffer,
   the same with the recorder stopped (SIGSTOP) during the loop (the BPF
   side alone, without the consumer competing for the 2 cores), and with the
   perf buffer; under strace. Median of REPEAT runs, ratio to untraced and
   to the floor.
2. redis: `redis-benchmark -n 100000 -c 20 -t get` requests/s against a
   loopback redis-server, in turn per repeat: untraced; under the
   do-nothing program (the tracepoint floor); under wtrec's own BPF
   programs with the filters of `record --read -c redis-server` and a
   consumer that only empties the ring (bench/drain.py: the floor of
   copying every read and write into a ring buffer); under `wtrec record
   --read -c redis-server`; then untraced beside a process (Busy) that only
   burns the share of a core the recorder just used: is the loss the
   recorder's work, or any process wanting that much CPU? (--busy-shares:
   more such rows at fixed shares.) With the CPU each process used during
   the benchmark (server, client, consumer, the whole machine): on 2 cores
   they compete, and other users of a shared machine show as "others".
3. sustained rate: 4 writeloop processes paced to a total rate for 4 s,
   at each rate untraced, under the do-nothing program, under wtrec's BPF
   programs with the draining consumer, and under `wtrec record`: the
   rate the writers reached, what was lost, the CPU of writers and
   consumer; the highest rate `wtrec record` captured with 0 lost.
4. the BPF programs' own time per run (kernel.bpf_stats_enabled: run_time_ns
   / run_cnt), wtrec's programs and the ring buffer floor's, under the loop.
5. start-up: `wtrec record -o F -- true`, launch to exit, with the compiled
   program cached (the usual case) and without (WTREC_BPF_CACHE=off: bcc
   compiles); and what start-up cannot go below: Python importing wtrec's
   CLI, importing bcc, and bcc compiling a one-line program.
6. offline: grep, show and info on a capture of HTTP-like 4 KiB writes
   (--offline-gib) and on 300,000 writes of 200 bytes, beside
   `zstdcat | grep -a -c` (bench/offline.py's tables; that script alone
   takes a 1 GB capture).

`--parts redis,paced` (for example) runs only those parts.
"""

import argparse
import atexit
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from wtrec.format import read_index
from wtrec.record import POLL_S
from wtrec.records import End

WTREC = [sys.executable, "-m", "wtrec"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FLOOR_PROGRAM = b"""
int on_enter(struct bpf_raw_tracepoint_args *ctx) { return 0; }
int on_exit(struct bpf_raw_tracepoint_args *ctx) { return 0; }
"""
# The least a capture of the loop's writes can do (compiled with -DCOMM0..2,
# the first bytes of the loop's comm). `reserved` counts what fitted: the
# ring is as large as wtrec's default and nothing reads it, so a run must
# fit in it or the row would time failed reservations.
RINGBUF_FLOOR_PROGRAM = b"""
BPF_RINGBUF_OUTPUT(ring, 8192);
BPF_ARRAY(reserved, u64, 1);
int on_enter(struct bpf_raw_tracepoint_args *ctx) { return 0; }
int on_exit(struct bpf_raw_tracepoint_args *ctx)
{
    u64 regs[11];  // pt_regs from r10 to cs (x86_64)
    bpf_probe_read_kernel(regs, sizeof(regs), (u8 *)ctx->args[0] + 56);
    if (regs[8] != 1)  // orig_ax: write
        return 0;
    char comm[16];
    bpf_get_current_comm(comm, sizeof(comm));
    if (comm[0] != COMM0 || comm[1] != COMM1 || comm[2] != COMM2)
        return 0;
    u8 *record = ring.ringbuf_reserve(144);
    if (!record)
        return 0;
    *(u64 *)record = bpf_ktime_get_boot_ns();
    bpf_probe_read_user(record + 80, 64, (void *)regs[6]);
    ring.ringbuf_submit(record, BPF_RB_NO_WAKEUP);
    u32 zero = 0;
    u64 *count = reserved.lookup(&zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    return 0;
}
"""
RINGBUF_FLOOR = "ring buffer floor: registers, comm, clock, 64-byte copy, no wakeup"


def build() -> Path:
    """writeloop, built under a name (so a comm) of this run alone: on a shared machine
    another run's writeloops would otherwise be traced, and counted, by this one's
    `record -c`."""
    binary = HERE / "out" / f"wloop{os.getpid()}"
    binary.parent.mkdir(exist_ok=True)
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / "writeloop.c")], check=True)
    return binary


def loop_ns(cmd: list[str]) -> float:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.split()[-1])


def wait_ready(proc: subprocess.Popen, marker: bytes = b"recording", timeout: float = 30) -> None:
    """Returns once the process has written `marker` on stderr (attached and reading)."""
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if marker in line:
                return
            if not line:
                break
    raise SystemExit(f"{proc.args[1:3]} did not start: {seen.decode(errors='replace')}")


def capture_end(path: str) -> End:
    with open(path, "rb") as stream:
        index, problem = read_index(stream)
    if index is None or index.stats.end is None:
        raise SystemExit(f"{path}: no index ({problem})")
    return index.stats.end


class Recorder:
    """`wtrec record` in the background; `stop()` returns (End, CPU seconds).

    With `count`, the recorder stops by itself after that many events, so
    a recorder that is behind drains its buffer instead of being cut short
    by the stop signal (which time-boxes the drain and counts the rest lost);
    if events were lost it never gets there, and is stopped after `grace` s.
    """

    def __init__(self, capture: str, *args: str, count: int | None = None):
        self.capture = capture
        extra = ["--count", str(count)] if count else []
        self.proc = subprocess.Popen([*WTREC, "record", "-q", "--force", "-o", capture, *extra,
                                      *args], stderr=subprocess.PIPE)
        self.count = count
        wait_ready(self.proc)

    def stop(self, grace: float = 20) -> tuple[End, float]:
        deadline = time.monotonic() + (grace if self.count else 0)
        while True:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if not pid:
            self.proc.send_signal(signal.SIGINT)
            _pid, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.proc.stderr.close()
        if self.proc.returncode != 0:
            raise SystemExit(f"wtrec record exited {self.proc.returncode}")
        return capture_end(self.capture), usage.ru_utime + usage.ru_stime

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self) -> "Finished":
        # A recorder behind by a whole 32 MiB buffer takes it in well under a
        # second; past that it lost events, will never reach `count`, and its
        # idle polling would only add to its CPU.
        end, cpu = self.stop(grace=5)
        return Finished(end.events, end.lost, cpu)


class Consumer(Protocol):
    """What a load runs under: a process taking the records (pid), or none (pid None)."""

    @property
    def pid(self) -> int | None: ...

    def finish(self) -> "Finished": ...


@dataclass(frozen=True)
class Finished:
    """What a consumer reports once stopped: events taken (or handed over), lost, and its
    CPU seconds over its whole life (None where there is no consumer process)."""

    events: int | None = None
    lost: int | None = None
    cpu: float | None = None


class Drain:
    """bench/drain.py in the background: wtrec's BPF programs, the ring emptied and discarded.

    `filters` are record's (-c COMM, --read). Its events are those the BPF
    side handed over, its lost those it could not.
    """

    def __init__(self, *filters: str):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "drain.py"), *filters],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_ready(self.proc, b"draining")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self) -> Finished:
        self.proc.send_signal(signal.SIGINT)
        out = self.proc.stdout.read()
        _pid, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.proc.stdout.close()
        self.proc.stderr.close()
        if self.proc.returncode != 0:
            raise SystemExit(f"bench/drain.py exited {self.proc.returncode}")
        counts = json.loads(out)
        return Finished(counts["handed_over"], counts["lost"], usage.ru_utime + usage.ru_stime)


class Untraced:
    """No tracing at all: the baseline row."""

    pid: int | None = None

    def finish(self) -> Finished:
        return Finished()


class ProgramAttached:
    """A bcc program's on_enter/on_exit attached to sys_enter/sys_exit until `finish`; with
    FLOOR_PROGRAM, the cost any syscall tracer pays, nothing recorded, no consumer."""

    pid: int | None = None

    def __init__(self, program):
        self.program = program
        program.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"on_enter")
        program.attach_raw_tracepoint(tp=b"sys_exit", fn_name=b"on_exit")

    def finish(self) -> Finished:
        self.program.detach_raw_tracepoint(tp=b"sys_enter")
        self.program.detach_raw_tracepoint(tp=b"sys_exit")
        return Finished()


# A stand-in for the recorder's CPU demand without any tracing: it sleeps
# POLL_S as the recorder does when its buffer is nearly empty, then works (CPU
# time, as the recorder's work is) for as long as keeps it at the recorder's
# share of a core.
BUSY_PROGRAM = """
import sys, time
share, sleep = float(sys.argv[1]), float(sys.argv[2])
busy = sleep * share / (1 - share)
while True:
    time.sleep(sleep)
    end = time.process_time() + busy
    while time.process_time() < end:
        pass
"""


class Busy:
    """BUSY_PROGRAM in the background at `share` of a core, until `finish`."""

    def __init__(self, share: float):
        self.proc = subprocess.Popen([sys.executable, "-c", BUSY_PROGRAM,
                                      str(min(share, 0.95)), str(POLL_S)])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self) -> Finished:
        self.proc.terminate()
        _pid, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return Finished(cpu=usage.ru_utime + usage.ru_stime)


MODE_UNTRACED = "untraced"
MODE_FLOOR = "floor: do-nothing program on sys_enter/sys_exit"
MODE_DRAIN = "wtrec's BPF programs, ring drained and discarded (bench/drain.py)"
MODE_WTREC = "wtrec record"
MODE_BUSY = "untraced, beside a process as busy as the recorder was (Busy)"


def consumer_starters(floor, capture: str, filters: tuple[str, ...], *,
                      count: int | None = None) -> dict[str, Callable[[], Consumer]]:
    """Mode name -> what starts it (the floor program, bench/drain.py or the recorder, with
    record's `filters`), in the order the modes are run for each repeat."""
    return {
        MODE_UNTRACED: Untraced,
        MODE_FLOOR: lambda: ProgramAttached(floor),
        MODE_DRAIN: lambda: Drain(*filters),
        MODE_WTREC: lambda: Recorder(capture, *filters, count=count),
    }


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent on anything but idling, since boot (/proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS  # not guest time: counted in user already


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU seconds a live process has used so far, all its threads (or one)."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def comm_cflags(binary: Path) -> list[str]:
    return [f"-DCOMM{index}={byte}" for index, byte in enumerate(binary.name.encode()[:3])]


def timed_under(program, loop: list[str]) -> float:
    """ns per call of the loop with a bcc program's on_enter/on_exit attached."""
    attached = ProgramAttached(program)
    try:
        return loop_ns(loop)
    finally:
        attached.finish()


def per_call(binary: Path, writes: int, size: int, repeat: int, workdir: str, floor):
    """Rows of (name, median ns per call, note)."""
    from bcc import BPF  # bench only: the floor programs

    loop = [str(binary), str(writes), str(size), "write"]
    capture = os.path.join(workdir, "percall.wtrace")
    times: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    for _ in range(repeat):
        times.setdefault("untraced", []).append(loop_ns(loop))
        times.setdefault("floor: do-nothing program on sys_enter/sys_exit", []).append(
            timed_under(floor, loop))
        ring_floor = BPF(text=RINGBUF_FLOOR_PROGRAM, cflags=comm_cflags(binary))
        times.setdefault(RINGBUF_FLOOR, []).append(timed_under(ring_floor, loop))
        reserved = ring_floor["reserved"][0].value
        notes[RINGBUF_FLOOR] = f"{reserved} of {writes} reserved"
        ring_floor.cleanup()
        drain = Drain("-c", binary.name)
        times.setdefault(MODE_DRAIN, []).append(loop_ns(loop))
        drained = drain.finish()
        notes[MODE_DRAIN] = f"{drained.events} handed over, {drained.lost} lost"
        for name, extra, paused in (
                ("wtrec (ring buffer)", [], False),
                ("wtrec (ring buffer), recorder paused: BPF side alone", [], True),
                ("wtrec (perf buffer)", ["--perf-buffer"], False)):
            recorder = Recorder(capture, "-c", binary.name, *extra, count=writes)
            if paused:  # SIGSTOP: the loop's records wait in the 32 MiB buffer
                recorder.proc.send_signal(signal.SIGSTOP)
            times.setdefault(name, []).append(loop_ns(loop))
            if paused:
                recorder.proc.send_signal(signal.SIGCONT)
            end, _cpu = recorder.stop()
            notes[name] = f"{end.events} events, {end.lost} lost"
        trace = os.path.join(workdir, "strace.out")
        times.setdefault("strace -e trace=write", []).append(loop_ns(
            ["strace", "-f", "-e", "trace=write", "-s", "4096", "-o", trace, *loop]))
    return [(name, statistics.median(values), notes.get(name, "")) for name, values in
            times.items()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class LoadRun:
    """One run of a load (redis-benchmark, or the paced writers) under one mode."""

    rate: float  # requests/s, or writes/s, the load reached
    calls: int  # requests, or writes, the load made
    seconds: float  # its wall time
    load_cpu: tuple[float, ...]  # CPU seconds of the load's processes (server, client; writers)
    consumer_cpu: float | None  # the consumer's CPU seconds while the load ran
    consumer_main: float | None  # ... of its main thread alone (Python: the GIL's holder)
    consumer_to_exit: float | None  # ... from the load's start to the consumer's exit
    events: int | None
    lost: int | None
    machine_cpu: float  # CPU seconds the whole machine was busy while the load ran

    def others(self) -> float:
        """Busy CPU seconds not of the load or the consumer: interrupts, kernel threads,
        other users of this shared machine."""
        return self.machine_cpu - sum(self.load_cpu) - (self.consumer_cpu or 0)


def median_run(runs: list[LoadRun]) -> LoadRun:
    """Each field's median over the runs (events and lost: the last run's)."""
    def middle(values):
        values = [value for value in values if value is not None]
        return statistics.median(values) if values else None

    return LoadRun(middle(run.rate for run in runs), runs[-1].calls,
                   middle(run.seconds for run in runs),
                   tuple(middle(cpu) for cpu in zip(*(run.load_cpu for run in runs), strict=True)),
                   middle(run.consumer_cpu for run in runs),
                   middle(run.consumer_main for run in runs),
                   middle(run.consumer_to_exit for run in runs), runs[-1].events, runs[-1].lost,
                   statistics.median(run.machine_cpu for run in runs))


Load = Callable[[], tuple[float, int, tuple[float, ...]]]


def under(start: Callable[[], Consumer], load: Load, watched: tuple[int, ...] = ()) -> LoadRun:
    """Runs `load` (-> rate, calls, CPU seconds of the processes it ran) under a consumer
    `start` makes; `watched`: pids of processes that live on (a server) whose CPU counts too."""
    consumer = start()
    pid = consumer.pid
    watched_before = [cpu_seconds(each) for each in watched]
    consumer_before = cpu_seconds(pid) if pid else None
    main_before = cpu_seconds(pid, pid) if pid else None
    machine_before = machine_busy_seconds()
    started = time.monotonic()
    rate, calls, load_cpu = load()
    seconds = time.monotonic() - started
    machine_cpu = machine_busy_seconds() - machine_before
    watched_cpu = tuple(cpu_seconds(each) - before
                        for each, before in zip(watched, watched_before, strict=True))
    consumer_cpu = (cpu_seconds(pid) - consumer_before
                    if pid is not None and consumer_before is not None else None)
    consumer_main = (cpu_seconds(pid, pid) - main_before
                     if pid is not None and main_before is not None else None)
    finished = consumer.finish()
    to_exit = (finished.cpu - consumer_before
               if finished.cpu is not None and consumer_before is not None else None)
    return LoadRun(rate, calls, seconds, watched_cpu + load_cpu, consumer_cpu, consumer_main,
                   to_exit,
                   finished.events, finished.lost, machine_cpu)


REDIS_REQUESTS = 100_000


def redis_benchmark(port: int) -> tuple[float, int, tuple[float, ...]]:
    """(requests/s, requests, (the client's CPU seconds,)) of one redis-benchmark run."""
    proc = subprocess.Popen(["redis-benchmark", "-p", str(port), "-n", str(REDIS_REQUESTS), "-c", "20",
                             "-t", "get", "-q"], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"redis-benchmark exited {proc.returncode}")
    # "GET: 98619.32 requests per second, p50=0.103 msec" (after \r progress lines)
    line = [part for part in out.replace("\r", "\n").splitlines() if "requests per second" in part]
    return float(line[-1].split()[1]), REDIS_REQUESTS, (usage.ru_utime + usage.ru_stime,)


def other_redis_servers(ours: int) -> int:
    """How many other redis-server processes run: `-c redis-server` traces them too."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != ours:
            try:
                count += (entry / "comm").read_text().strip() == "redis-server"
            except OSError:
                pass
    return count


def redis(workdir: str, repeat: int, floor, busy_shares: tuple[float, ...] = ()
          ) -> dict[str, LoadRun]:
    """Mode -> median LoadRun of redis-benchmark against a loopback redis-server; the modes
    alternate within each repeat so that noise falls on all alike. load_cpu is
    (server, client). `busy_shares`: more untraced rows beside a Busy process at those
    shares of a core (what a consumer needing that much CPU would cost)."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)
        others = other_redis_servers(server.pid)
        if others:
            print(f"warning: {others} other redis-server processes are traced too")
        starters = consumer_starters(floor, os.path.join(workdir, "redis.wtrace"),
                                     ("--read", "-c", "redis-server"))
        shares = {f"untraced, beside Busy at {share:.2f} of a core": share
                  for share in busy_shares}
        runs: dict[str, list[LoadRun]] = {mode: [] for mode in (*starters, MODE_BUSY, *shares)}
        for _ in range(repeat):
            for mode, start in starters.items():
                runs[mode].append(under(start, partial(redis_benchmark, port), (server.pid,)))
            # Is it the recorder's work, or any process wanting that much CPU?
            recorded = runs[MODE_WTREC][-1]
            share = (recorded.consumer_cpu or 0) / recorded.seconds
            runs[MODE_BUSY].append(under(partial(Busy, share), partial(redis_benchmark, port),
                                         (server.pid,)))
            for mode, share in shares.items():
                runs[mode].append(under(partial(Busy, share), partial(redis_benchmark, port),
                                        (server.pid,)))
        return {mode: median_run(each) for mode, each in runs.items()}
    finally:
        server.terminate()
        server.wait(10)


def paced_writers(binary: Path, writes: int, per_process: float,
                  processes: int) -> tuple[float, int, tuple[float, ...]]:
    """(writes/s the slowest writer held times `processes`, writes, (the writers' CPU
    seconds,))."""
    loops = [subprocess.Popen([str(binary), str(writes), "64", "write", str(per_process)],
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    slowest, cpu = 0.0, 0.0
    for loop in loops:
        slowest = max(slowest, float(loop.stdout.read().split()[-1]))
        _pid, status, usage = os.wait4(loop.pid, 0)
        loop.returncode = os.waitstatus_to_exitcode(status)
        loop.stdout.close()
        cpu += usage.ru_utime + usage.ru_stime
    return processes * 1e9 / slowest, writes * processes, (cpu,)


def paced(binary: Path, workdir: str, rates: list[int], floor, seconds: float = 4,
          processes: int = 4) -> list[tuple[int, str, LoadRun]]:
    """(target rate, mode, run) for a paced load of 64-byte writes at each rate, the modes in
    turn: do the writers reach the rate at all, under the floor, under wtrec's programs
    with a consumer that only drains, under wtrec record; and what each loses."""
    rows = []
    for rate in rates:
        per_process = rate / processes
        writes = int(per_process * seconds)
        # The recorder stops by itself once it has every write: one that is
        # behind drains its buffer instead of being cut short by the stop signal.
        starters = consumer_starters(floor, os.path.join(workdir, "paced.wtrace"),
                                     ("-c", binary.name), count=writes * processes)
        for mode, start in starters.items():
            rows.append((rate, mode, under(start, partial(paced_writers, binary, writes,
                                                          per_process, processes))))
    return rows


def whole_run(workdir: str, repeat: int, cache: bool = True) -> list[float]:
    """Seconds of `record -- true`, launch to exit; `cache=False`: bcc compiles each time."""
    capture = os.path.join(workdir, "true.wtrace")
    env = dict(os.environ)
    if not cache:
        env["WTREC_BPF_CACHE"] = "off"
    runs = []
    for number in range(repeat + (1 if cache else 0)):
        started = time.monotonic()
        subprocess.run([*WTREC, "record", "-q", "--force", "-o", capture, "--", "true"],
                       check=True, stderr=subprocess.DEVNULL, env=env)
        if number or not cache:  # with the cache, the first run may fill it
            runs.append(time.monotonic() - started)
    return runs


def program_costs(binary: Path, writes: int, size: int) -> list[tuple[str, float, int]]:
    """(program, ns per run, runs) under the loop, from the kernel's own BPF statistics.

    Runs count every syscall on the machine during the loop (other processes'
    too, which leave early), so compare programs within one run.
    """
    from bcc import BPF  # bench only: the floor program

    from wtrec.capture.probe import Probe, ProbeConfig

    loop = [str(binary), str(writes), str(size), "write"]
    stats_switch = Path("/proc/sys/kernel/bpf_stats_enabled")
    was = stats_switch.read_text().strip()
    stats_switch.write_text("1")
    rows = []
    try:
        probe = Probe(ProbeConfig(comms=(binary.name,)))
        try:
            before = probe.program_stats()
            loop_ns(loop)
            after = probe.program_stats()
        finally:
            probe.close()
        for name in ("on_sys_enter", "on_sys_exit"):
            runs = after[name][1] - before[name][1]
            rows.append((f"wtrec {name}", (after[name][0] - before[name][0]) / max(1, runs), runs))
        ring_floor = BPF(text=RINGBUF_FLOOR_PROGRAM, cflags=comm_cflags(binary))
        ring_floor.attach_raw_tracepoint(tp=b"sys_exit", fn_name=b"on_exit")
        fd = ring_floor.funcs[b"on_exit"].fd
        before_floor = fdinfo_stats(fd)
        loop_ns(loop)
        after_floor = fdinfo_stats(fd)
        runs = after_floor[1] - before_floor[1]
        rows.append((f"{RINGBUF_FLOOR} (on_exit)", (after_floor[0] - before_floor[0]) / max(1, runs),
                     runs))
        ring_floor.cleanup()
    finally:
        stats_switch.write_text(was)
    return rows


def fdinfo_stats(fd: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines() if ":" in line)
    return int(fields["run_time_ns"]), int(fields["run_cnt"])


def start_up_floors(repeat: int) -> list[tuple[str, float]]:
    """(what, median seconds) of what any start-up of the recorder pays."""
    commands = (
        ("python -c 'import wtrec.cli.record_command'",
         [sys.executable, "-c", "import wtrec.cli.record_command"]),
        ("python -c 'import bcc'", [sys.executable, "-c", "import bcc"]),
        ("bcc compiles a one-line program", [sys.executable, "-c", "from bcc import BPF; "
                                             "BPF(text='int f(void *ctx) { return 0; }')"]),
    )
    rows = []
    for name, command in commands:
        runs = []
        for _ in range(repeat):
            started = time.monotonic()
            subprocess.run(command, check=True, stderr=subprocess.DEVNULL, cwd=ROOT)
            runs.append(time.monotonic() - started)
        rows.append((name, statistics.median(runs)))
    return rows


PARTS = ("percall", "redis", "paced", "programs", "startup", "offline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rates", default="250000,500000,750000,1000000,1500000",
                        help="total paced rates to try, writes/s")
    parser.add_argument("--offline-gib", type=float, default=0.25,
                        help="size of the capture grep/show/info are timed on (0: skip)")
    parser.add_argument("--busy-shares", default="",
                        help="redis: also untraced beside a busy process at these shares of a "
                             "core, e.g. 0.05,0.1,0.2 (what a consumer's CPU alone costs)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {','.join(PARTS)} (default: all)")
    args = parser.parse_args()
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    if parts - set(PARTS):
        parser.error(f"--parts: unknown {', '.join(sorted(parts - set(PARTS)))}")
    if os.geteuid() != 0:
        raise SystemExit("bench/run.py needs root (it attaches BPF programs)")
    from bcc import BPF  # bench only: the floor program

    binary = build()
    atexit.register(binary.unlink, missing_ok=True)
    floor = BPF(text=FLOOR_PROGRAM)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as workdir:
        if "percall" in parts:
            print_per_call(per_call(binary, args.writes, args.size, args.repeat, workdir, floor),
                           args)
        if "redis" in parts:
            shares = tuple(float(share) for share in args.busy_shares.split(",") if share)
            print_redis(redis(workdir, args.repeat, floor, shares), args.repeat)
        if "paced" in parts:
            print_paced(paced(binary, workdir, [int(rate) for rate in args.rates.split(",")],
                              floor))
        if "programs" in parts:
            print("\nBPF programs' own time per run (kernel.bpf_stats_enabled), same loop:\n")
            print("| program | ns/run | runs |\n|---|---:|---:|")
            for name, ns, runs in program_costs(binary, args.writes, args.size):
                print(f"| {name} | {ns:.0f} | {runs} |")
        if "startup" in parts:
            print_start_up(workdir, args.repeat)
        if "offline" in parts and args.offline_gib > 0:
            offline_throughput(workdir, args.offline_gib, args.repeat)
    floor.cleanup()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


def print_per_call(rows: list[tuple[str, float, str]], args: argparse.Namespace) -> None:
    base, floor = rows[0][1], rows[1][1]
    print(f"\n{args.writes} write() calls of {args.size} bytes to /dev/null, "
          f"median of {args.repeat} runs\n")
    print("| mode | ns/call | x untraced | x floor | notes |\n|---|---:|---:|---:|---|")
    for name, ns, note in rows:
        print(f"| {name} | {ns:.0f} | {ns / base:.2f} | {ns / floor:.2f} | {note} |")


def cell(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def consumer_cell(run: LoadRun) -> str:
    """The consumer's CPU per second of load, and its main thread's in parentheses."""
    if run.consumer_cpu is None:
        return "-"
    text = f"{run.consumer_cpu / run.seconds:.2f}"
    if run.consumer_main is not None:
        text += f" ({run.consumer_main / run.seconds:.2f})"
    return text


def per_event_us(run: LoadRun) -> float | None:
    """The consumer's CPU per event it got, from the load's start to its exit."""
    if run.consumer_to_exit is None or not run.events:
        return None
    return run.consumer_to_exit / run.events * 1e6


def print_redis(runs: dict[str, LoadRun], repeat: int) -> None:
    """The redis table: rate and ratio, then where the CPU went (per second of benchmark:
    2.0 is both cores)."""
    base = runs[MODE_UNTRACED].rate
    print(f"\nredis-benchmark -n 100000 -c 20 -t get against redis-server, filters of "
          f"`record --read -c redis-server`, median of {repeat} runs (modes alternating); "
          "CPU in seconds per second of benchmark (machine: all that was busy, 2.0 is both "
          "cores; others: what was neither load nor consumer):\n")
    print("| mode | req/s | x untraced | server CPU us/req | server | benchmark | consumer (main) "
          "| others | machine | consumer CPU us/event, start to exit | events | lost |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, run in runs.items():
        server, client = run.load_cpu
        print(f"| {mode} | {run.rate:.0f} | {run.rate / base:.2f} "
              f"| {server / run.calls * 1e6:.1f} | {server / run.seconds:.2f} "
              f"| {client / run.seconds:.2f} | {consumer_cell(run)} "
              f"| {run.others() / run.seconds:.2f} | {run.machine_cpu / run.seconds:.2f} "
              f"| {cell(per_event_us(run), '.2f')} | {cell(run.events, 'd')} "
              f"| {cell(run.lost, 'd')} |")


def print_paced(rows: list[tuple[int, str, LoadRun]]) -> None:
    """The paced table: per rate and mode, what the writers reached, what was lost, and the
    CPU of writers and consumer per second of load."""
    print("\npaced load, 4 processes, 64-byte writes, 4 s; CPU in seconds per second of "
          "load (machine: all that was busy, 2.0 is both cores; others: what was neither "
          "writers nor consumer):\n")
    print("| target writes/s | mode | achieved writes/s | writers CPU | consumer CPU (main) | others "
          "| machine | writers CPU us/write | consumer CPU us/event, start to exit | events "
          "| lost |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    best = 0.0
    for rate, mode, run in rows:
        (writers,) = run.load_cpu
        print(f"| {rate} | {mode} | {run.rate:.0f} | {writers / run.seconds:.2f} "
              f"| {consumer_cell(run)} | {run.others() / run.seconds:.2f} "
              f"| {run.machine_cpu / run.seconds:.2f} | {writers / run.calls * 1e6:.2f} "
              f"| {cell(per_event_us(run), '.2f')} | {cell(run.events, 'd')} "
              f"| {cell(run.lost, 'd')} |")
        if mode == MODE_WTREC and run.lost == 0:
            best = max(best, run.rate)
    print(f"\nhighest sustained rate `wtrec record` captured with 0 lost: {best:.0f} writes/s")


def print_start_up(workdir: str, repeat: int) -> None:
    print("\nstart-up, median of each:\n")
    print("| what | seconds |\n|---|---:|")
    for label, cache in (("`wtrec record -o F -- true`, compiled program cached", True),
                         ("`wtrec record -o F -- true`, WTREC_BPF_CACHE=off (bcc compiles)",
                          False)):
        runs = whole_run(workdir, repeat, cache=cache)
        print(f"| {label} | {statistics.median(runs):.2f} "
              f"(min {min(runs):.2f}, max {max(runs):.2f}) |")
    for label, seconds in start_up_floors(repeat):
        print(f"| {label} | {seconds:.2f} |")


def offline_throughput(workdir: str, gib: float, repeat: int) -> None:
    """grep, show and info beside `zstdcat | grep -a -c` (bench/offline.py's tables): a
    capture of HTTP-like 4 KiB writes, and one of 300,000 writes of 200 bytes."""
    import offline  # bench/offline.py, beside this file

    big = os.path.join(workdir, "offline-big.wtrace")
    events, payload = offline.build(big, gib)
    print(f"\noffline commands, page cache warm, median of {repeat} runs:\n")
    offline.measure(big, events, payload, repeat)
    os.unlink(big)
    small = os.path.join(workdir, "offline-small.wtrace")
    events, payload = offline.build(small, 1 << 20, event_size=200, max_events=300_000)
    print()
    offline.measure(small, events, payload, repeat)
    os.unlink(small)


if __name__ == "__main__":
    main()
