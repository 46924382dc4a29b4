"""The real TLS clients the `record --tls` tests will drive can fetch from tests/https_server.

Plain processes, no eBPF: each client fetches a URL from the local HTTPS server
(self-signed certificate, verification off as each client allows) and must get
the body back while the server sees its request.
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys

import pytest
from https_server import BODY, HttpsServer

PYTHON_FETCH = (
    "import ssl, sys, urllib.request\n"
    "context = ssl._create_unverified_context()\n"
    "sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], context=context).read())\n")

NODE_FETCH = (
    "require('https').get(process.argv[1], {rejectUnauthorized: false}, (res) => {"
    " res.on('data', (d) => process.stdout.write(d)); })"
    ".on('error', (e) => { console.error(e.message); process.exit(1); });")

CLIENTS = {
    "curl": lambda url: ["curl", "-sk", url],
    "python": lambda url: [sys.executable, "-c", PYTHON_FETCH, url],
    "wget": lambda url: ["wget", "-q", "--no-check-certificate", "-O", "-", url],
    "node": lambda url: ["node", "-e", NODE_FETCH, url],
}


def need_program(program: str) -> None:
    if shutil.which(program) is None:
        reason = f"{program} is not installed (scripts/bootstrap setup installs it)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def https():
    need_program("openssl")
    with HttpsServer() as server:
        yield server


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_client_fetches_over_tls(https, client):
    command = CLIENTS[client](https.url(f"/from-{client}"))
    need_program(command[0])
    before = len(https.requests)
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == BODY
    seen = https.requests[before:]
    assert [(r.method, r.path) for r in seen] == [("GET", f"/from-{client}")]


def test_post_body_is_echoed(https):
    need_program("curl")
    payload = b"secret=hunter2&x=\x01\x02"
    done = subprocess.run(["curl", "-sk", "--data-binary", "@-", https.url("/post")],
                          input=payload, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload
    assert https.requests[-1].body == payload


def test_certificate_is_self_signed_for_loopback(https):
    context = ssl.create_default_context(cafile=str(https.cert))
    with socket.create_connection(("127.0.0.1", https.port)) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /verified HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := tls.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(BODY)
