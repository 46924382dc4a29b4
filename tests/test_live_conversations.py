"""Live: real clients and servers recorded, then read back as conversations and messages."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import wtrec_cmd
from live_helpers import Recorder, Server, free_port, read_line_until, run_client, run_recorded

# Every test here attaches real BPF programs: skip on a laptop, fail under CI.
pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live")]

H2_SERVER = r"""
const http2 = require('http2');
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  stream.respond({':status': 200, 'content-type': 'text/plain'});
  stream.end('h2 says hello to ' + headers[':path']);
});
server.listen(0, '127.0.0.1', () => console.log('listening ' + server.address().port));
"""


def wtrec_json(*args: str) -> list[dict]:
    done = subprocess.run(wtrec_cmd(*args), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def need(*programs: str) -> None:
    missing = [p for p in programs if not shutil.which(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing (scripts/bootstrap installs them)")


class Service:
    """A server process that prints a line once it listens; stopped by terminate."""

    def __init__(self, argv: list[str], ready: str, cwd: str | None = None):
        # unbuffered: a line that arrives with others is not left in a buffer select cannot see
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     bufsize=0, cwd=cwd)
        try:
            self.line = read_line_until(self.proc.stdout, ready, 30, [])
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_curl_against_http_server_gives_the_request_and_a_timed_response(workdir):
    need("curl")
    with open(os.path.join(workdir, "x"), "wb") as f:
        f.write(b"seven B")
    server = Service([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
                     "Serving HTTP", cwd=workdir)
    try:
        port = int(server.line.split(" port ")[1].split()[0])
        capture = os.path.join(workdir, "curl.wtrace")
        done = run_recorded(capture, ["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/x"],
                            "--read")
        assert done.returncode == 0, done.stderr
    finally:
        server.stop()
    got = [m for m in wtrec_json("messages", "--json", capture) if m["proto"] == "http"]
    assert [(m["comm"], m["direction"], m.get("method"), m.get("target"), m.get("status"))
            for m in got] == [("curl", "out", "GET", "/x", None), ("curl", "in", None, None, 200)]
    assert got[1]["latency_ns"] > 0 and got[1]["body_len"] == 7 and not got[1]["incomplete"]
    assert ["Host", f"127.0.0.1:{port}"] in got[0]["headers"]


def test_redis_cli_set_gives_the_command_and_ok(workdir):
    need("redis-server", "redis-cli")
    port = free_port()
    server = Service(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", workdir], "Ready to accept connections")
    try:
        capture = os.path.join(workdir, "redis.wtrace")
        done = run_recorded(capture, ["redis-cli", "-p", str(port), "SET", "k", "v"], "--read")
        assert done.returncode == 0, done.stderr
    finally:
        server.stop()
    got = [m for m in wtrec_json("messages", "--json", capture) if m["proto"] == "redis"]
    assert [(m["direction"], m.get("command"), m.get("reply")) for m in got] == [
        ("out", ["SET", "k", "v"], None), ("in", None, "OK")]


def test_client_and_server_traced_together_are_one_conversation(samples, workdir):
    capture = os.path.join(workdir, "pair.wtrace")
    # The recorder starts first, so it sees the server's bind and accept.
    recorder = Recorder("-c", "server-tcp", "-c", "client-tcp", "--read", "-o", capture)
    server = Server(samples)
    try:
        client_pid, client_fd = run_client(samples, server.port, [b"first line\n", b"second line\n"])
    finally:
        server.stop()
        recorder.stop()
    conversations = [s for s in wtrec_json("streams", "--json", capture)
                     if any(side["kind"] == "tcp" for side in s["sides"])]
    assert len(conversations) == 1, conversations
    sides = conversations[0]["sides"]
    assert [(s["comm"], s["pid"], s["fd"]) for s in sides][0] == ("client-tcp", client_pid, client_fd)
    assert [s["comm"] for s in sides] == ["client-tcp", "server-tcp"]
    assert sides[0]["out"]["bytes"] == sides[1]["in"]["bytes"] == 23
    assert sides[0]["in"]["bytes"] == sides[1]["out"]["bytes"] > 0
    pieces = wtrec_json("follow", capture, str(conversations[0]["stream"]), "--json")
    assert [p["text"] for p in pieces if p["flow"] == "->"] == ["first line\n", "second line\n"]


def test_h2c_exchange_gives_method_path_and_status(workdir):
    need("node", "curl")
    script = os.path.join(workdir, "h2server.js")
    with open(script, "w") as f:
        f.write(H2_SERVER)
    server = Service(["node", script], "listening")
    try:
        port = int(server.line.split()[1])
        capture = os.path.join(workdir, "h2.wtrace")
        done = run_recorded(capture, ["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge",
                                      f"http://127.0.0.1:{port}/h2/path"], "--read")
        assert done.returncode == 0, done.stderr
    finally:
        server.stop()
    got = [m for m in wtrec_json("messages", "--json", capture) if m["proto"] == "http2"]
    headers = [(m["direction"], m["stream_id"], dict(m["headers"])) for m in got if m["frame"] == "HEADERS"]
    assert [(d, s, h.get(":method"), h.get(":path"), h.get(":status")) for d, s, h in headers] == [
        ("out", 1, "GET", "/h2/path", None), ("in", 1, None, None, "200")]
    data = [m for m in got if m["frame"] == "DATA" and m["direction"] == "in"]
    assert sum(m["length"] for m in data) == len("h2 says hello to /h2/path")
