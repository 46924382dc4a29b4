"""How fast the offline commands read a big capture, against zstdcat | grep -a.

    .venv/bin/python bench/offline.py [--gib 1] [--small-events 300000] [--repeat 3] [--keep FILE]

Writes a capture of at least --gib GiB of payload with wtrec's own writer
(4 KiB HTTP-like payloads from a 4 MiB pool of words, so it compresses
about as well as real text traffic; one event in 1000 holds the needle),
and a second one of --small-events events of 200 bytes, then times whole
commands on each (median of --repeat runs, page cache warm) and prints
MB/s of payload, events/s, CPU seconds (user + system, all processes of
the command) and the ratio of each time to `zstdcat | grep -a -c` in the
same run: on a shared, noisy machine compare ratios, not times. No root needed.

Floor rows say what a Python reader of the file pays: wtrec's own start-up
(grep on a 10-event capture); Python importing the libraries wtrec is built
on; start-up plus decompressing every frame on one core (zstdcat's work);
start-up plus wtrec's reader pipeline (two decompressing threads) handing on
frames undecoded; and that plus checking every record once in C, the least
that `grep`'s promise (every field of every record checked) costs.
`--floor decompress|frames|checked FILE` runs one.
"""

import argparse
import json
import os
import random
import resource
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
# what any Python command built on wtrec's libraries imports before its first byte
LIBRARIES = "typer, msgpack, msgspec, zstandard"
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


def build(path: str, gib: float, event_size: int = EVENT_SIZE,
          max_events: int | None = None) -> tuple[int, int]:
    rng = random.Random(7)
    pool = [p[:event_size] for p in payload_pool(rng)]
    target = int(gib * (1 << 30))
    header = Header(1, 2, "bench", "bench", "bench", time.time_ns(), 0, time.time_ns(),
                    ("bench",), Filters(comms=("bench",)), 4096, "ringbuf")
    events = payload = 0
    with open(path, "wb") as out:
        writer = CaptureWriter(out, header)
        for fd in range(3, 11):
            writer.write(FdInfo(0, 1000 + fd, fd, FdIdentity("tcp", "10.0.0.1:40000",
                                                             f"10.0.0.2:{8000 + fd}")))
        while payload < target and (max_events is None or events < max_events):
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


def timed(command: str, repeat: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds of the command and its children."""
    runs, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, check=False)
        runs.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{command}: exit {done.returncode}: {done.stderr.decode()[-300:]}")
    return statistics.median(runs), statistics.median(cpus)


def totals(path: str) -> tuple[int, int]:
    info = subprocess.run([sys.executable, "-m", "wtrec", "info", "--json", path],
                          capture_output=True, text=True, check=True, cwd=ROOT).stdout
    counts = json.loads(info)["events"]
    return counts["events"], counts["bytes"]


def read_floor(what: str, path: str) -> None:
    """The floor rows' work, after wtrec's imports (the start-up every command pays).

    decompress: every frame on one core, as zstdcat does. frames: wtrec's
    reader pipeline (read-ahead thread, two decompressing threads) handing
    on each frame's bytes, nothing decoded. checked: that, and every record
    decoded and checked once by msgspec in C (checked_frames), with no
    Python object made per record beyond msgspec's: what checking every
    field costs at the least.
    """
    import zstandard

    import wtrec.cli.app  # noqa: F401  (the start-up every command pays)
    from wtrec.wtrace import checked_frames
    from wtrec.wtrace.framing import read_preamble
    from wtrec.wtrace.reader import CaptureReader

    records = 0
    with open(path, "rb") as stream:
        if what == "decompress":
            reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
            while reader.read(1 << 20):
                pass
        else:
            capture = CaptureReader(stream)
            read_preamble(capture._source)
            for content, _offset, _searched in capture._iter_frames():
                if what == "checked":
                    counted = checked_frames.record_bounds(content, 128)
                    if counted and checked_frames.decode(content, counted[0]) is not None:
                        records += counted[0]
    print(records)


def measure(path: str, events: int, payload: int, repeat: int) -> None:
    size = os.path.getsize(path)
    wtrec = f"{sys.executable} -m wtrec"
    needle = NEEDLE.decode()
    tiny = path + ".tiny"
    build(tiny, 1 << 20, event_size=200, max_events=10)
    floor = f"{sys.executable} {Path(__file__).resolve()} --floor"
    commands = [
        ("zstdcat | grep -a -c", f"zstdcat -q {path} | grep -a -c '{needle}'"),
        ("zstdcat | grep -a -c -F", f"zstdcat -q {path} | grep -a -c -F '{needle}'"),
        ("floor: wtrec start-up", f"{wtrec} grep -c '{needle}' {tiny}"),
        ("floor: Python + libraries", f"{sys.executable} -c 'import {LIBRARIES}'"),
        ("floor: start-up + zstd, 1 core", f"{floor} decompress {path}"),
        ("floor: start-up + zstd, 2 threads", f"{floor} frames {path}"),
        ("floor: that + check records (C)", f"{floor} checked {path}"),
        ("wtrec grep -c", f"{wtrec} grep -c '{needle}' {path}"),
        ("wtrec grep -c -F", f"{wtrec} grep -c -F '{needle}' {path}"),
        ("wtrec grep -c -i", f"{wtrec} grep -c -i '{needle}' {path}"),
        ("wtrec grep -c '^X-Needle'", f"{wtrec} grep -c '^{needle}' {path}"),
        ("wtrec grep --stream -c", f"{wtrec} grep --stream -c '{needle}' {path}"),
        ("wtrec grep (print matches)", f"{wtrec} grep '{needle}' {path} > /dev/null"),
        ("wtrec show", f"{wtrec} show {path} > /dev/null"),
        ("wtrec show | head -1", f"{wtrec} show {path} | head -1"),
        ("wtrec info (index)", f"{wtrec} info {path}"),
        ("wtrec info (scan, stdin)", f"cat {path} | {wtrec} info -"),
        ("python -c 'import wtrec.cli.read_commands'",
         f"{sys.executable} -c 'import wtrec.cli.read_commands'"),
    ]
    print(f"capture: {events} events, {payload / 1e9:.2f} GB payload, {size / 1e9:.2f} GB file "
          f"({payload / size:.1f}x); median of {repeat} runs, page cache warm")
    print(f"{'command':<30} {'seconds':>8} {'x pipe':>7} {'cpu s':>7} {'x pipe':>7} "
          f"{'MB/s':>8} {'events/s':>11}")
    base = None
    for name, command in commands:
        seconds, cpu = timed(command, repeat)
        base = base or (seconds, cpu)
        print(f"{name:<30} {seconds:>8.2f} {seconds / base[0]:>7.2f} {cpu:>7.2f} "
              f"{cpu / base[1]:>7.2f} {payload / seconds / 1e6:>8.0f} {events / seconds:>11.0f}",
              flush=True)
    os.unlink(tiny)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--small-events", type=int, default=300_000,
                        help="events of 200 B in the second capture (0: none)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", help="write the big capture here and keep it")
    parser.add_argument("--floor", nargs=2, metavar=("decompress|frames|checked", "FILE"),
                        help="only do a floor row's work on FILE")
    args = parser.parse_args()
    if args.floor:
        read_floor(*args.floor)
        return
    workdir = tempfile.mkdtemp(prefix="wtrec-bench-")
    path = args.keep or os.path.join(workdir, "big.wtrace")
    if args.keep and os.path.exists(path):
        events, payload = totals(path)
    else:
        events, payload = build(path, args.gib)
    measure(path, events, payload, args.repeat)
    if not args.keep:
        os.unlink(path)
    if args.small_events:
        small = os.path.join(workdir, "small.wtrace")
        events, payload = build(small, 1 << 20, event_size=200, max_events=args.small_events)
        print()
        measure(small, events, payload, args.repeat)
        os.unlink(small)
    os.rmdir(workdir)


if __name__ == "__main__":
    main()
