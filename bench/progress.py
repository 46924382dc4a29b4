"""What the progress bar costs: `wtrec grep -c` with stderr on a terminal, bar on and off.

    .venv/bin/python bench/progress.py [--gib 0.5] [--repeat 5] [--keep FILE]

Builds a capture as bench/offline.py does, then runs `grep -c` alternately
with stderr on a pseudo-terminal (bar drawn), on the same terminal with
WTREC_NO_PROGRESS=1, and on a pipe; prints the median wall and CPU seconds
(the command and its children) and the ratios to the run without a bar,
all in one run: on a shared, noisy machine compare ratios, not times.
"""

import argparse
import os
import pty
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from offline import NEEDLE, build


def run_once(path: str, *, terminal: bool, env: dict) -> tuple[float, float, bytes]:
    """Wall and CPU seconds of one grep -c, and what it drew on stderr."""
    master = slave = None
    if terminal:
        master, slave = pty.openpty()
    drawn: list[bytes] = []

    def drain() -> None:
        assert master is not None
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            drawn.append(chunk)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "wtrec", "grep", "-c", NEEDLE.decode(), path],
                               stdout=subprocess.DEVNULL,
                               stderr=slave if terminal else subprocess.PIPE, env=env, cwd=ROOT)
    reader = None
    if terminal:
        os.close(slave)  # type: ignore[arg-type]
        reader = threading.Thread(target=drain)
        reader.start()
        process.wait()
    else:
        drawn.append(process.communicate()[1])
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if reader is not None:
        reader.join()
        os.close(master)  # type: ignore[arg-type]
    if process.returncode != 0:
        raise SystemExit(f"grep -c exited {process.returncode}: {b''.join(drawn)[-300:]!r}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, b"".join(drawn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", help="Build the capture here (reused if it exists).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.keep or os.path.join(scratch, "bench.wtrace")
        if not os.path.exists(path):
            build(path, args.gib)
        env = {k: v for k, v in os.environ.items() if k not in ("WTREC_NO_PROGRESS", "CI")}
        env["TERM"] = "xterm"
        kinds = {
            "terminal, bar drawn": dict(terminal=True, env=env),
            "terminal, WTREC_NO_PROGRESS=1": dict(terminal=True, env={**env, "WTREC_NO_PROGRESS": "1"}),
            "stderr on a pipe": dict(terminal=False, env=env),
        }
        times: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
        frames = 0
        for _ in range(args.repeat):  # interleaved, so drift on the machine hits all alike
            for kind, how in kinds.items():
                wall, cpu, drawn = run_once(path, **how)  # type: ignore[arg-type]
                times[kind].append((wall, cpu))
                if kind == "terminal, bar drawn":
                    frames = max(frames, drawn.count(b"\r\x1b[2K"))
                elif b"\x1b" in drawn:
                    raise SystemExit(f"{kind}: drew on stderr: {drawn[:200]!r}")
        size = os.path.getsize(path)
        print(f"capture {size / 1e6:.0f} MB, {args.repeat} runs each, median; "
              f"up to {frames} bar redraws in one run")
        base_wall = statistics.median(w for w, _ in times["terminal, WTREC_NO_PROGRESS=1"])
        base_cpu = statistics.median(c for _, c in times["terminal, WTREC_NO_PROGRESS=1"])
        for kind, runs in times.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            print(f"  {kind:32} wall {wall:6.2f} s ({wall / base_wall:5.3f})  "
                  f"cpu {cpu:6.2f} s ({cpu / base_cpu:5.3f})")


if __name__ == "__main__":
    main()
