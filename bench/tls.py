"""Benchmark of record --tls: what a TLS write costs untraced, under record, under record --tls.

Run as root from the checkout: `.venv/bin/python bench/tls.py`. In one run:

1. per call: bench/ssl_write_loop (N SSL_write or SSL_write_ex calls of
   SIZE bytes on one TLS 1.3 connection to a local sink that discards the
   ciphertext undecrypted, so the client alone is measured) untraced, under
   `wtrec record -c ssl_write_loop` (syscalls: the write under each call)
   and under `wtrec record --tls -c ssl_write_loop`; rounds interleaved,
   median (min-max) of REPEAT runs.
2. the machine: bench/uprobe_micro (N calls of an empty function) untraced,
   with an empty BPF program as uprobe, as uretprobe, and as both; so a
   reader can tell what the trap costs on this machine from what wtrec adds.

Each program times itself with its thread's CPU time (CLOCK_THREAD_CPUTIME_ID),
which includes the kernel's work on its behalf (traps, BPF programs) but not
time spent preempted: the numbers hold on a shared, busy machine, where
wall-clock times do not.
"""

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import Recorder  # bench/run.py: the recorder in the background

EMPTY_PROGRAM = b"int hit(void *ctx) { return 0; }"
WARM_UP = 1000  # SSL_write calls ssl_write_loop makes before it starts the clock


def build(name: str, *libs: str) -> Path:
    binary = HERE / "out" / name
    binary.parent.mkdir(exist_ok=True)
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / f"{name}.c"), *libs], check=True)
    return binary


def certificate(directory: str) -> tuple[str, str]:
    cert, key = f"{directory}/cert.pem", f"{directory}/key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def start_sink(cert: str, key: str) -> int:
    """A TLS server in a thread: handshakes, then reads the raw socket and drops it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(sock: socket.socket) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    return
                incoming.write(data)
        sock.sendall(outgoing.read())
        try:
            while sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass
        sock.close()

    def accept() -> None:
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=serve, args=(sock,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def ns_per_call(cmd: list[str]) -> float:
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])


def cell(values: list[float]) -> str:
    return f"{statistics.median(values) / 1000:.2f} ({min(values) / 1000:.2f}-{max(values) / 1000:.2f})"


def per_call(loop: Path, port: int, calls: int, size: int, repeat: int,
             workdir: str) -> tuple[dict, dict]:
    """{mode: {program: [ns per call]}} and {mode: recorder's events/lost}."""
    programs = {"SSL_write": [], "SSL_write_ex": ["ex"]}
    modes = {"untraced": None, "wtrec record": [], "wtrec record --tls": ["--tls"]}
    results: dict[str, dict[str, list[float]]] = {m: {p: [] for p in programs} for m in modes}
    notes: dict[str, str] = {}
    for _round in range(repeat):
        for mode, extra in modes.items():
            recorder = None
            if extra is not None:
                # Stops by itself once it has the loops' events (each SSL_write is one write
                # syscall, and one TLS event with --tls), so it drains at its own pace
                # instead of being cut short by a stop signal.
                writes = len(programs) * (WARM_UP + calls)
                recorder = Recorder(f"{workdir}/bench.wtrace", *extra, "-c", loop.name,
                                    "--buffer-size", "64M",
                                    count=writes * (2 if "--tls" in extra else 1))
            for program, args in programs.items():
                results[mode][program].append(
                    ns_per_call([str(loop), str(port), str(calls), str(size), *args]))
            if recorder is not None:
                end, cpu = recorder.stop()
                notes[mode] = f"{end.events} events, {end.lost} lost, recorder {cpu:.1f} s CPU"
    return results, notes


def micro(binary: Path, calls: int, repeat: int) -> dict[str, list[float]]:
    """ns per call of an empty function: untraced, uprobe, uretprobe, both."""
    from bcc import BPF  # bench only: an empty program, the floor of a uprobe

    rows: dict[str, list[float]] = {}
    for mode in ("untraced", "uprobe", "uretprobe", "uprobe + uretprobe"):
        bpf = BPF(text=EMPTY_PROGRAM)
        if mode in ("uprobe", "uprobe + uretprobe"):
            bpf.attach_uprobe(name=str(binary), sym="probed", fn_name="hit")
        if mode in ("uretprobe", "uprobe + uretprobe"):
            bpf.attach_uretprobe(name=str(binary), sym="probed", fn_name="hit")
        rows[mode] = [ns_per_call([str(binary), str(calls)]) for _ in range(repeat)]
        bpf.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="SSL_write calls per run")
    parser.add_argument("--size", type=int, default=64, help="bytes per SSL_write")
    parser.add_argument("--repeat", type=int, default=5, help="runs per cell")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/tls.py needs root (it attaches BPF programs)")
    loop = build("ssl_write_loop", "-lssl", "-lcrypto")
    probed = build("uprobe_micro")
    with tempfile.TemporaryDirectory(prefix="wtrec-bench-tls-") as workdir:
        port = start_sink(*certificate(workdir))
        results, notes = per_call(loop, port, args.calls, args.size, args.repeat, workdir)
    print(f"## {args.size}-byte TLS writes, {args.calls} per run, {args.repeat} runs per cell: "
          "µs per call, median (min-max), thread CPU time\n")
    print("| mode | C SSL_write | C SSL_write_ex |\n|---|---:|---:|")
    for mode, row in results.items():
        print(f"| {mode} | {cell(row['SSL_write'])} | {cell(row['SSL_write_ex'])} |")
    for mode, note in notes.items():
        print(f"\n{mode}: {note}")
    rows = micro(probed, 100000, args.repeat)
    print("\n## this machine: an empty function, ns per call, median (min-max)\n")
    print("| probe | ns per call |\n|---|---:|")
    for mode, values in rows.items():
        print(f"| {mode} | {statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f}) |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
