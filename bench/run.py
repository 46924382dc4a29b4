"""Benchmark of the recorder: per-call cost, a real server, sustained rate, start-up.

Run as root from the checkout: `.venv/bin/python bench/run.py`. In one run:

1. per call: bench/writeloop (N 64-byte write()s to /dev/null, timed inside
   the loop) untraced; under a do-nothing BPF program on wtrec's attach
   points (raw tracepoints sys_enter and sys_exit returning at once: the
   floor any syscall tracer pays); under `wtrec record` with the ring buffer,
   the same with the recorder stopped (SIGSTOP) during the loop (the BPF
   side alone, without the consumer competing for the 2 cores), and with the
   perf buffer; under strace. Median of REPEAT runs, ratio to untraced and
   to the floor.
2. redis: `redis-benchmark -n 100000 -c 20 -t get` requests/s against a
   loopback redis-server, untraced and under `wtrec record --read -c
   redis-server`, and the CPU seconds the recorder used.
3. sustained rate: 4 writeloop processes paced to a total rate for 4 s
   under `wtrec record`; the highest rate captured with 0 lost.
4. whole run: `wtrec record -o F -- true`, launch to exit.
(grep/show/info throughput is bench/offline.py.)
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


def per_call(binary: Path, writes: int, size: int, repeat: int, workdir: str):
    """Rows of (name, median ns per call, note)."""
    from bcc import BPF  # bench only: the floor program

    loop = [str(binary), str(writes), str(size), "write"]
    capture = os.path.join(workdir, "percall.wtrace")
    times: dict[str, list[float]] = {}
    notes: dict[str, str] = {}
    floor = BPF(text=FLOOR_PROGRAM)
    for _ in range(repeat):
        times.setdefault("untraced", []).append(loop_ns(loop))
        floor.attach_raw_tracepoint(tp=b"sys_enter", fn_name=b"on_enter")
        floor.attach_raw_tracepoint(tp=b"sys_exit", fn_name=b"on_exit")
        times.setdefault("floor: do-nothing program on sys_enter/sys_exit", []).append(
            loop_ns(loop))
        floor.detach_raw_tracepoint(tp=b"sys_enter")
        floor.detach_raw_tracepoint(tp=b"sys_exit")
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


def whole_run(workdir: str, repeat: int) -> list[float]:
    capture = os.path.join(workdir, "true.wtrace")
    runs = []
    for _ in range(repeat):
        started = time.monotonic()
        subprocess.run([*WTREC, "record", "-q", "--force", "-o", capture, "--", "true"],
                       check=True, stderr=subprocess.DEVNULL)
        runs.append(time.monotonic() - started)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rates", default="250000,500000,750000,1000000,1500000",
                        help="total paced rates to try, writes/s")
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

        runs = whole_run(workdir, args.repeat)
        print(f"\n`wtrec record -o F -- true`, whole run: median {statistics.median(runs):.2f} s "
              f"(min {min(runs):.2f}, max {max(runs):.2f})")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
