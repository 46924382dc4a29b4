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
   loopback redis-server, untraced and under `wtrec record --read -c
   redis-server`, and the CPU seconds the recorder used.
3. sustained rate: 4 writeloop processes paced to a total rate for 4 s
   under `wtrec record`; the highest rate captured with 0 lost.
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
"""

import argparse
import atexit
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from wtrec.format import read_index
from wtrec.records import End

WTREC = [sys.executable, "-m", "wtrec"]
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


def wait_ready(proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if b"recording" in line:
                return
            if not line:
                break
    raise SystemExit(f"wtrec did not start: {seen.decode(errors='replace')}")


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


def comm_cflags(binary: Path) -> list[str]:
    return [f"-DCOMM{index}={byte}" for index, byte in enumerate(binary.name.encode()[:3])]


def timed_under(program, loop: list[str]) -> float:
    """ns per call of the loop with a bcc program's on_enter/on_exit attached."""
    program.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"on_enter")
    program.attach_raw_tracepoint(tp=b"sys_exit", fn_name=b"on_exit")
    try:
        return loop_ns(loop)
    finally:
        program.detach_raw_tracepoint(tp=b"sys_enter")
        program.detach_raw_tracepoint(tp=b"sys_exit")


def per_call(binary: Path, writes: int, size: int, repeat: int, workdir: str):
    """Rows of (name, median ns per call, note)."""
    from bcc import BPF  # bench only: the floor programs

    loop = [str(binary), str(writes), str(size), "write"]
    capture = os.path.join(workdir, "percall.wtrace")
    times: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    floor = BPF(text=FLOOR_PROGRAM)
    for _ in range(repeat):
        times.setdefault("untraced", []).append(loop_ns(loop))
        times.setdefault("floor: do-nothing program on sys_enter/sys_exit", []).append(
            timed_under(floor, loop))
        ring_floor = BPF(text=RINGBUF_FLOOR_PROGRAM, cflags=comm_cflags(binary))
        times.setdefault(RINGBUF_FLOOR, []).append(timed_under(ring_floor, loop))
        reserved = ring_floor["reserved"][0].value
        notes[RINGBUF_FLOOR] = f"{reserved} of {writes} reserved"
        ring_floor.cleanup()
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
    floor.cleanup()
    return [(name, statistics.median(values), notes.get(name, "")) for name, values in
            times.items()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_rps(port: int) -> float:
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-n", "100000", "-c", "20",
                          "-t", "get", "-q"], capture_output=True, text=True, check=True).stdout
    # "GET: 98619.32 requests per second, p50=0.103 msec" (after \r progress lines)
    line = [part for part in out.replace("\r", "\n").splitlines() if "requests per second" in part]
    return float(line[-1].split()[1])


def redis(workdir: str, repeat: int) -> tuple[float, float, float, End]:
    """(untraced rps, traced rps, recorder CPU seconds, the traced capture's end)."""
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
        untraced, traced, cpu = [], [], []
        end = End(0, 0, 0, 0)
        for _ in range(repeat):
            untraced.append(redis_rps(port))
            recorder = Recorder(os.path.join(workdir, "redis.wtrace"), "--read", "-c",
                                "redis-server")
            traced.append(redis_rps(port))
            end, seconds = recorder.stop()
            cpu.append(seconds)
        return statistics.median(untraced), statistics.median(traced), statistics.median(cpu), end
    finally:
        server.terminate()
        server.wait(10)


def paced(binary: Path, workdir: str, total_rate: int, seconds: float = 4,
          processes: int = 4) -> tuple[float, End]:
    """(achieved writes/s, the capture's end) for a paced load of 64-byte writes."""
    per_process = total_rate / processes
    writes = int(per_process * seconds)
    recorder = Recorder(os.path.join(workdir, "paced.wtrace"), "-c", binary.name,
                        count=writes * processes)
    loops = [subprocess.Popen([str(binary), str(writes), "64", "write", str(per_process)],
                              stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    slowest = max(float(loop.communicate()[0].split()[-1]) for loop in loops)
    end, _cpu = recorder.stop()
    return writes * processes / (writes * slowest / 1e9), end


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rates", default="250000,500000,750000,1000000,1500000",
                        help="total paced rates to try, writes/s")
    parser.add_argument("--offline-gib", type=float, default=0.25,
                        help="size of the capture grep/show/info are timed on (0: skip)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/run.py needs root (it attaches BPF programs)")
    binary = build()
    atexit.register(binary.unlink, missing_ok=True)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as workdir:
        rows = per_call(binary, args.writes, args.size, args.repeat, workdir)
        base = rows[0][1]
        floor = rows[1][1]
        print(f"\n{args.writes} write() calls of {args.size} bytes to /dev/null, "
              f"median of {args.repeat} runs\n")
        print("| mode | ns/call | x untraced | x floor | notes |\n|---|---:|---:|---:|---|")
        for name, ns, note in rows:
            print(f"| {name} | {ns:.0f} | {ns / base:.2f} | {ns / floor:.2f} | {note} |")

        untraced, traced, cpu, end = redis(workdir, max(1, args.repeat // 2))
        print(f"\nredis-benchmark -n 100000 -c 20 -t get: untraced {untraced:.0f} req/s, "
              f"under `record --read -c redis-server` {traced:.0f} req/s "
              f"({traced / untraced:.2f}x); recorder CPU {cpu:.1f} s; "
              f"{end.events} events, {end.lost} lost")

        print("\npaced load, 4 processes, 64-byte writes, 4 s:\n")
        print("| target writes/s | achieved writes/s | events | lost |\n|---:|---:|---:|---:|")
        best = 0.0
        for rate in map(int, args.rates.split(",")):
            achieved, end = paced(binary, workdir, rate)
            print(f"| {rate} | {achieved:.0f} | {end.events} | {end.lost} |")
            if end.lost == 0:
                best = max(best, achieved)
        print(f"\nhighest sustained rate with 0 lost: {best:.0f} writes/s")

        print("\nBPF programs' own time per run (kernel.bpf_stats_enabled), same loop:\n")
        print("| program | ns/run | runs |\n|---|---:|---:|")
        for name, ns, runs in program_costs(binary, args.writes, args.size):
            print(f"| {name} | {ns:.0f} | {runs} |")

        print("\nstart-up, median of each:\n")
        print("| what | seconds |\n|---|---:|")
        for label, cache in (("`wtrec record -o F -- true`, compiled program cached", True),
                             ("`wtrec record -o F -- true`, WTREC_BPF_CACHE=off (bcc compiles)",
                              False)):
            runs = whole_run(workdir, args.repeat, cache=cache)
            print(f"| {label} | {statistics.median(runs):.2f} "
                  f"(min {min(runs):.2f}, max {max(runs):.2f}) |")
        for label, seconds in start_up_floors(args.repeat):
            print(f"| {label} | {seconds:.2f} |")
        if args.offline_gib > 0:
            offline_throughput(workdir, args.offline_gib, args.repeat)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


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
