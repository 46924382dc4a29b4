"""Drives real processes for the live eBPF tests: server, client, recorder."""

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import wtrec_cmd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_line_until(stream, needle: str, timeout: float, seen: list[str]) -> str:
    """Reads lines from a pipe until one contains `needle`; fails with what it saw."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = stream.readline()
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if not line:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} within {timeout}s; saw: {''.join(seen)!r}")


class Server:
    """samples/server-tcp on a free loopback port."""

    def __init__(self, samples: Path):
        self.port = free_port()
        self.proc = subprocess.Popen([str(samples / "server-tcp"), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        read_line_until(self.proc.stderr, "listening", 10, [])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Recorder:
    """`wtrec record` in the background, ready once it says it is recording."""

    def __init__(self, *args: str, env: dict | None = None, stdout=subprocess.DEVNULL):
        # Unbuffered: read_line_until selects on the pipe, and a buffered
        # reader could hold a second line where select() cannot see it.
        self.proc = subprocess.Popen(wtrec_cmd("record", "-q", *args), stdout=stdout,
                                     stderr=subprocess.PIPE, bufsize=0,
                                     env={**os.environ, **(env or {})})
        self.stderr_lines: list[str] = []
        read_line_until(self.proc.stderr, "recording", 30, self.stderr_lines)

    def stop(self, sig=signal.SIGINT) -> str:
        """Stops it like Ctrl-C and returns everything it said on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rest = self.proc.stderr.read().decode("utf-8", "replace")
        self.proc.wait(30)
        return "".join(self.stderr_lines) + rest


def run_client(samples: Path, port: int, lines: list[bytes]) -> tuple[int, int]:
    """Sends `lines` with samples/client-tcp; returns (pid, socket fd)."""
    client = subprocess.Popen([str(samples / "client-tcp"), "127.0.0.1", str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    greeting = client.stderr.readline().decode()
    assert "connected" in greeting, greeting
    fd = int(greeting.rsplit("fd", 1)[1])
    assert os.readlink(f"/proc/{client.pid}/fd/{fd}").startswith("socket:")
    client.stdin.write(b"".join(lines))
    client.stdin.close()
    assert client.wait(30) == 0, client.stderr.read()
    return client.pid, fd


WRITER_SCRIPT = r"""
import os, sys
sys.stdin.readline()                      # wait until the recorder is ready
for size in map(int, sys.argv[1:]):
    data = bytes((i * 7 + size) % 251 for i in range(size))
    fd = os.open(os.devnull, os.O_WRONLY)
    assert os.write(fd, data) == size
    os.close(fd)
"""


def start_writer(*sizes: int) -> subprocess.Popen:
    """A Python process that writes buffers of the given sizes once told to go."""
    return subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, *map(str, sizes)],
                            stdin=subprocess.PIPE)


def expected_payload(size: int) -> bytes:
    return bytes((i * 7 + size) % 251 for i in range(size))


class Sink:
    """A loopback TCP server in a thread: keeps every byte it receives.

    With `http=True` it answers a request (after the blank line) with a
    short HTTP response, so HTTP clients finish.
    """

    def __init__(self, http: bool = False, reply: bytes = b""):
        import threading

        self.http = http
        self.reply = reply
        self.received = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                self.received += chunk
                if self.http and b"\r\n\r\n" in self.received:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                 b"Connection: close\r\n\r\nhi")
                    break
                if self.reply:
                    conn.sendall(self.reply)
        self._listener.close()

    def wait(self, timeout: float = 30) -> bytes:
        self._thread.join(timeout)
        return bytes(self.received)


def run_recorded(out: str, command: list[str], *options: str, env: dict | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
    """`wtrec record -o OUT [options] -- COMMAND`, to completion."""
    return subprocess.run(wtrec_cmd("record", "-q", "--force", "-o", out, *options, "--",
                                    *command),
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
