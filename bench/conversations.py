"""How fast streams, follow and messages read a capture of HTTP/1.1 traffic, against show.

    .venv/bin/python bench/conversations.py [--mb 200] [--repeat 3] [--keep FILE]

Writes a capture of at least --mb MB of payload with wtrec's own writer:
16 keep-alive connections, each side traced (client writes requests and
reads responses), responses of 1-16 KiB with Content-Length, one in eight
chunked, bodies over the 4096-byte snaplen cut as a real capture would
be. Then times whole commands (median of --repeat runs, page cache warm)
and prints MB/s of payload and events/s. No root needed.
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

SNAPLEN = 4096
CONNECTIONS = 16


def exchange(rng: random.Random, number: int) -> tuple[bytes, bytes]:
    request = (b"GET /api/items/%d?page=%d HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: bench\r\n"
               b"Accept: application/json\r\n\r\n" % (number, number % 7))
    body = bytes(rng.choice(b"abcdefghij {}\":,0123456789") for _ in range(rng.randint(1024, 16384)))
    if number % 8 == 0:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 4000]), body[i:i + 4000])
                          for i in range(0, len(body), 4000))
        response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    else:
        response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % len(body) + body)
    return request, response


def build(path: str, megabytes: float) -> tuple[int, int]:
    rng = random.Random(12)
    pool = [exchange(rng, i) for i in range(256)]
    header = Header(1, 2, "bench", "bench", "bench", time.time_ns(), 0, time.time_ns(),
                    ("bench",), Filters(comms=("curl",)), SNAPLEN, "ringbuf")
    events = payload = 0
    ts = 0
    with open(path, "wb") as out:
        writer = CaptureWriter(out, header)
        for fd in range(3, 3 + CONNECTIONS):
            writer.write(FdInfo(0, 4000, fd, FdIdentity("tcp", f"127.0.0.1:{40000 + fd}",
                                                        "127.0.0.1:8080")))
        number = 0
        while payload < megabytes * 1e6:
            fd = 3 + number % CONNECTIONS
            request, response = pool[number % len(pool)]
            number += 1
            ts += 50_000
            writer.write(IoEvent(ts, 4000, 4000, 0, b"curl", fd, len(request), request, "sendto",
                                 len(request), events, "out"))
            events += 1
            payload += len(request)
            for start in range(0, len(response), 16384):  # one read per 16 KiB, cut at snaplen
                piece = response[start:start + 16384]
                ts += 20_000
                writer.write(IoEvent(ts, 4000, 4000, 0, b"curl", fd, 16384, piece[:SNAPLEN], "recvfrom",
                                     len(piece), events, "in"))
                events += 1
                payload += min(len(piece), SNAPLEN)
        writer.close(End(ts, events, payload, 0))
    return events, payload


def timed(command: str, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, check=False)
        runs.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{command}: exit {done.returncode}: {done.stderr.decode()[-300:]}")
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", help="write the capture here and keep it")
    args = parser.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(prefix="wtrec-bench-"), "http.wtrace")
    events, payload = build(path, args.mb)
    wtrec = f"{sys.executable} -m wtrec"
    commands = [
        ("wtrec show", f"{wtrec} show {path} > /dev/null"),
        ("wtrec show --json", f"{wtrec} show --json {path} > /dev/null"),
        ("wtrec streams", f"{wtrec} streams {path} > /dev/null"),
        ("wtrec messages", f"{wtrec} messages {path} > /dev/null"),
        ("wtrec messages --json", f"{wtrec} messages --json {path} > /dev/null"),
        ("wtrec follow 1", f"{wtrec} follow {path} 1 > /dev/null"),
    ]
    print(f"capture: {events} events, {payload / 1e6:.0f} MB captured payload, "
          f"{os.path.getsize(path) / 1e6:.0f} MB file; median of {args.repeat} runs, page cache warm")
    print(f"{'command':<24} {'seconds':>8} {'MB/s':>8} {'events/s':>11}")
    for name, command in commands:
        seconds = timed(command, args.repeat)
        print(f"{name:<24} {seconds:>8.2f} {payload / seconds / 1e6:>8.0f} {events / seconds:>11.0f}",
              flush=True)
    if not args.keep:
        os.unlink(path)


if __name__ == "__main__":
    main()
