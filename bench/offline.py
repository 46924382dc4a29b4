"""How fast the offline commands read a big capture, against zstdcat | grep -a.

    .venv/bin/python bench/offline.py [--gib 1] [--repeat 3] [--keep FILE]

Writes a capture of at least --gib GiB of payload with wtrec's own writer
(4 KiB HTTP-like payloads from a 4 MiB pool of words, so it compresses
about as well as real text traffic; one event in 1000 holds the needle),
then times whole commands (median of --repeat runs, page cache warm) and
prints MB/s of payload and events/s. No root needed.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wtrec.format import CaptureWriter
from wtrec.records import End, FdIdentity, FdInfo, Filters, Header, IoEvent

NEEDLE = b"X-Needle: found-me"
EVENT_SIZE = 4096


def payload_pool(rng: random.Random, count: int = 1024) -> list[bytes]:
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(2, 10)))
             for _ in range(5000)]
    pool = []
    for i in range(count):
        body = b" ".join(rng.choice(words) for _ in range(900))
        head = (b"POST /api/v1/items/%d HTTP/1.1\r\nHost: shop.example\r\n"
                b"Content-Type: application/json\r\n\r\n" % i)
        pool.append((head + body)[:EVENT_SIZE])
    return pool


def build(path: str, gib: float) -> tuple[int, int]:
    rng = random.Random(7)
    pool = payload_pool(rng)
    target = int(gib * (1 << 30))
    header = Header(1, 2, "bench", "bench", "bench", time.time_ns(), 0, time.time_ns(),
                    ("bench",), Filters(comms=("bench",)), 4096, "ringbuf")
    events = payload = 0
    with open(path, "wb") as out:
        writer = CaptureWriter(out, header)
        for fd in range(3, 11):
            writer.write(FdInfo(0, 1000 + fd, fd, FdIdentity("tcp", "10.0.0.1:40000",
                                                             f"10.0.0.2:{8000 + fd}")))
        while payload < target:
            data = pool[events % len(pool)]
            if events % 1000 == 999:
                data = data[:100] + NEEDLE + data[100 + len(NEEDLE):]
            fd = 3 + events % 8
            writer.write(IoEvent(events * 1000, 1000 + fd, 1000 + fd, 0, b"bench", fd,
                                 len(data), data, "write", len(data), events))
            events += 1
            payload += len(data)
        writer.close(End(events * 1000, events, payload, 0))
    return events, payload


def timed(command: str, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, check=False)
        runs.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{command}: exit {done.returncode}: {done.stderr.decode()[-300:]}")
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", help="write the capture here and keep it")
    args = parser.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(prefix="wtrec-bench-"), "big.wtrace")
    if args.keep and os.path.exists(path):
        info = subprocess.run([sys.executable, "-m", "wtrec", "info", "--json", path],
                              capture_output=True, text=True, check=True, cwd=ROOT).stdout
        import json

        totals = json.loads(info)["events"]
        events, payload = totals["events"], totals["bytes"]
    else:
        events, payload = build(path, args.gib)
    size = os.path.getsize(path)
    wtrec = f"{sys.executable} -m wtrec"
    needle = NEEDLE.decode()
    commands = [
        ("zstdcat | grep -a -c", f"zstdcat -q {path} | grep -a -c '{needle}'"),
        ("zstdcat | grep -a -c -F", f"zstdcat -q {path} | grep -a -c -F '{needle}'"),
        ("wtrec grep -c", f"{wtrec} grep -c '{needle}' {path}"),
        ("wtrec grep -c -F", f"{wtrec} grep -c -F '{needle}' {path}"),
        ("wtrec grep --stream -c", f"{wtrec} grep --stream -c '{needle}' {path}"),
        ("wtrec grep (print matches)", f"{wtrec} grep '{needle}' {path} > /dev/null"),
        ("wtrec show", f"{wtrec} show {path} > /dev/null"),
        ("wtrec info (index)", f"{wtrec} info {path}"),
        ("wtrec info (scan, stdin)", f"cat {path} | {wtrec} info -"),
    ]
    print(f"capture: {events} events, {payload / 1e9:.2f} GB payload, {size / 1e9:.2f} GB file "
          f"({payload / size:.1f}x); median of {args.repeat} runs, page cache warm")
    print(f"{'command':<28} {'seconds':>8} {'MB/s':>8} {'events/s':>11}")
    for name, command in commands:
        seconds = timed(command, args.repeat)
        print(f"{name:<28} {seconds:>8.2f} {payload / seconds / 1e6:>8.0f} "
              f"{events / seconds:>11.0f}", flush=True)
    if not args.keep:
        os.unlink(path)


if __name__ == "__main__":
    main()
