"""Benchmark: the cost of a traced syscall, wtrec against strace, and start-up time.

Run as root from the checkout: `.venv/bin/python bench/run.py`. Builds
bench/writeloop (N 64-byte calls, timed inside the loop) and runs it for
write(), writev() and sendto(): untraced and under `wtrec record` (ring
buffer), plus write() under `wtrec record --perf-buffer` and under
`strace -f -e trace=write`, REPEAT times each; prints the median ns per call
and the ratio to untraced. Then measures how long `wtrec record` takes from
launch to its first captured event.
"""

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from wtrec.format import CaptureReader
from wtrec.records import End, IoEvent

WTREC = [sys.executable, "-m", "wtrec"]


def build() -> Path:
    binary = HERE / "out" / "writeloop"
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


def under_wtrec(binary: Path, writes: int, size: int, mode: str, workdir: str,
                extra: list[str]):
    capture = os.path.join(workdir, "bench.wtrace")
    rec = subprocess.Popen([*WTREC, "record", "-q", "--force", "-c", binary.name, "-o", capture,
                            *extra], stderr=subprocess.PIPE)
    wait_ready(rec)
    ns = loop_ns([str(binary), str(writes), str(size), mode])
    rec.send_signal(signal.SIGINT)
    rec.communicate(timeout=300)
    with open(capture, "rb") as stream:
        reader = CaptureReader(stream)
        events = sum(isinstance(r, IoEvent) for r in reader)
    end = reader.end or End(0, 0, 0, -1)
    return ns, events, end.lost, os.path.getsize(capture)


def startup_seconds(workdir: str) -> float:
    """Launch of `wtrec record` to the boot-clock time of its first captured write."""
    ticker = subprocess.Popen([sys.executable, "-c",
                               "import os, time\nwhile True:\n os.write(1, b't')\n time.sleep(0.002)"],
                              stdout=subprocess.DEVNULL)
    capture = os.path.join(workdir, "startup.wtrace")
    launched = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    rec = subprocess.Popen([*WTREC, "record", "-q", "--force", "-p", str(ticker.pid),
                            "--count", "1", "-o", capture], stderr=subprocess.DEVNULL)
    rec.wait(60)
    ticker.kill()
    with open(capture, "rb") as stream:
        first = next(r for r in CaptureReader(stream) if isinstance(r, IoEvent))
    return (first.ts_ns - launched) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/run.py needs root (it attaches BPF programs)")
    binary = build()
    loop = [str(binary), str(args.writes), str(args.size)]
    rows: dict[str, list[float]] = {}
    notes = {}
    base = {}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeat):
            for mode in ("write", "writev", "sendto"):
                rows.setdefault(f"{mode} untraced", []).append(loop_ns([*loop, mode]))
                runs = [("wtrec (ring buffer)", [])]
                if mode == "write":
                    runs.append(("wtrec (perf buffer)", ["--perf-buffer"]))
                for name, extra in runs:
                    ns, events, lost, size = under_wtrec(binary, args.writes, args.size, mode,
                                                         workdir, extra)
                    rows.setdefault(f"{mode} {name}", []).append(ns)
                    notes[f"{mode} {name}"] = f"{events} events, {lost} lost, {size / 1e6:.1f} MB"
            trace = os.path.join(workdir, "strace.out")
            rows.setdefault("write strace", []).append(loop_ns(
                ["strace", "-f", "-e", "trace=write", "-s", "4096", "-o", trace, *loop, "write"]))
        startups = [startup_seconds(workdir) for _ in range(5)]
    for name, values in rows.items():
        if name.endswith("untraced"):
            base[name.split()[0]] = statistics.median(values)
    print(f"{args.writes} calls of {args.size} bytes, median of {args.repeat} runs")
    print(f"{'syscall and mode':<30}{'ns/call':>9}{'x untraced':>12}  notes")
    for name, values in rows.items():
        median = statistics.median(values)
        ratio = median / base[name.split()[0]]
        print(f"{name:<30}{median:>9.0f}{ratio:>12.1f}  {notes.get(name, '')}")
    print(f"start-up, launch to first captured event: median {statistics.median(startups):.2f} s "
          f"(min {min(startups):.2f} s, max {max(startups):.2f} s)")


if __name__ == "__main__":
    main()
