"""samples/server-tls and client-tls (wolfSSL, TLS 1.3) behave like the TCP pair.

Plain processes, no eBPF: the pair talks on a free port; each side is also
checked against Python's ssl module, so a line the client sends is seen
byte for byte by a server that is not ours, and the canned reply comes back.
"""

import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import ROOT
from live_helpers import free_port, read_line_until

REPLY = b"I hear ya fa shizzle!\n"
LINES = [b"GET /hello HTTP/1.1\n", b"secret=hunter2\n",
         b"\tand a tab, an \x1b[31mescape\x1b[0m \xff\n"]


@pytest.fixture(scope="module")
def tls_samples() -> Path:
    samples = ROOT / "samples"
    made = subprocess.run(["make", "-s", "-C", str(samples), "server-tls", "client-tls",
                           "server-cert.pem"], capture_output=True, text=True)
    if made.returncode != 0:
        reason = f"cannot build the TLS samples: {made.stderr.strip()}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return samples


def start_server(samples: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen([str(samples / "server-tls"), str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    read_line_until(server.stderr, "listening", 10, [])
    return server, port


def run_client(samples: Path, port: int, lines: list[bytes]) -> subprocess.CompletedProcess:
    return subprocess.run([str(samples / "client-tls"), "127.0.0.1", str(port)],
                          input=b"".join(lines), capture_output=True, timeout=30)


def test_pair_answers_every_line(tls_samples):
    server, port = start_server(tls_samples)
    try:
        done = run_client(tls_samples, port, LINES)
    finally:
        server.terminate()
        server.wait(10)
    assert done.returncode == 0, done.stderr
    assert done.stdout == REPLY * len(LINES)
    assert f"connected to 127.0.0.1:{port} on fd".encode() in done.stderr
    assert b"TLSv1.3" in done.stderr


def test_client_sends_each_line_exactly(tls_samples):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_samples / "server-cert.pem", tls_samples / "server-key.pem")
    received: list[bytes] = []
    versions: list[str | None] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            versions.append(tls.version())
            lines = tls.makefile("rb")
            while line := lines.readline():
                received.append(line)
                tls.sendall(REPLY)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        done = run_client(tls_samples, port, LINES)
        thread.join(30)
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    assert received == LINES
    assert versions == ["TLSv1.3"]
    assert done.stdout == REPLY * len(LINES)


def test_server_answers_a_verifying_client(tls_samples):
    server, port = start_server(tls_samples)
    context = ssl.create_default_context(cafile=str(tls_samples / "server-cert.pem"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"
            replies = []
            for line in LINES:
                tls.sendall(line)
                replies.append(tls.recv(4096))
    finally:
        server.terminate()
        server.wait(10)
    assert replies == [REPLY] * len(LINES)


def test_client_refuses_a_server_with_another_certificate(tls_samples, tmp_path):
    from https_server import make_certificate

    cert, key = make_certificate(tmp_path)
    server = subprocess.Popen([str(tls_samples / "server-tls"), str(free_port()), str(cert), str(key)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line_until(server.stderr, "listening", 10, [])
        port = int(line.rsplit(":", 1)[1])
        done = run_client(tls_samples, port, LINES)
    finally:
        server.terminate()
        server.wait(10)
    assert done.returncode == 1
    assert b"handshake" in done.stderr and done.stdout == b""
