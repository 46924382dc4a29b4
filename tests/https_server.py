"""A local HTTPS server with a freshly made self-signed certificate, for TLS tests.

`HttpsServer` serves 127.0.0.1 on a free port from a thread: GET answers
`BODY`, POST echoes the request body; every request is kept in `requests` so a
test can compare what the client sent with what a capture holds. The
certificate (P-256, for 127.0.0.1 and localhost) is made with the openssl
command into a temporary directory and removed with the server.
"""

import http.server
import shutil
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

BODY = b"hello over tls\n"


@dataclass(frozen=True)
class SeenRequest:
    """One request as the server parsed it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Writes a self-signed certificate and its key into `directory`; returns (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    return cert, key


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_TlsHttpServer"

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _keep(self, body: bytes) -> None:
        self.server.requests.append(SeenRequest(self.command, self.path, dict(self.headers.items()), body))

    def do_GET(self) -> None:
        self._keep(b"")
        self._answer(BODY)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._keep(body)
        self._answer(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read `requests`, not a log."""


class _TlsHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.requests: list[SeenRequest] = []

    def get_request(self):
        # The handshake runs in the handler thread (do_handshake_on_connect),
        # so one client failing it cannot stall the accept loop.
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


class HttpsServer:
    """The server running in a thread; use as a context manager."""

    def __init__(self) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="wtrec-https-"))
        self.cert, self.key = make_certificate(self._directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        self._server = _TlsHttpServer(context)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def requests(self) -> list[SeenRequest]:
        return self._server.requests

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "HttpsServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
        shutil.rmtree(self._directory, ignore_errors=True)
