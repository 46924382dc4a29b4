"""record --tls with real TLS clients (curl, python, wget, node, the wolfSSL samples).

Each client fetches from tests/https_server.py under `record --tls --read`;
the capture must hold the request the server saw, byte for byte, as the
plaintext of the client's TLS writes on the connection's socket (its tcp
identity named), and the reply as the plaintext of its TLS reads.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wtrec_cmd
from https_server import BODY, HttpsServer, SeenRequest
from live_helpers import Recorder, assert_summary_lost_nothing, free_port, read_line_until
from test_https_clients import CLIENTS
from test_https_clients import need_program as need

from wtrec.format import CaptureReader
from wtrec.records import End, FdIdentity, FdInfo, IoEvent, Lost

LIBRARIES = {"curl": "OpenSSL", "python": "OpenSSL", "wget": "GnuTLS", "node": "OpenSSL"}


@pytest.fixture(scope="module")
def https(live):
    need("openssl")
    with HttpsServer() as server:
        yield server


class Capture:
    """A capture read back: its events, each with the fd identity in force for it."""

    def __init__(self, path: Path):
        reader = CaptureReader(path.open("rb"))
        self.events: list[tuple[IoEvent, FdIdentity | None]] = []
        self.lost = 0
        self.ended = False
        names: dict[tuple[int, int], FdIdentity] = {}
        for record in reader:
            if isinstance(record, FdInfo):
                names[(record.pid, record.fd)] = record.identity
            elif isinstance(record, IoEvent):
                self.events.append((record, names.get((record.pid, record.fd))))
            elif isinstance(record, Lost):
                self.lost += record.count
            elif isinstance(record, End):
                self.ended = True
        assert reader.header is not None
        self.header = reader.header

    def tls(self, direction: str) -> list[tuple[IoEvent, FdIdentity | None]]:
        return [(e, i) for e, i in self.events if e.layer == "tls" and e.direction == direction]


def request_bytes(seen: SeenRequest) -> bytes:
    """The request as the client sent it (the server keeps header order and case)."""
    head = f"{seen.method} {seen.path} HTTP/1.1\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in seen.headers.items()) + "\r\n"
    return head.encode("latin-1") + seen.body


def record(workdir: str, *args: str, timeout: float = 120) -> tuple[Capture, str]:
    path = Path(workdir) / "tls.wtrace"
    path.unlink(missing_ok=True)
    done = subprocess.run(wtrec_cmd("record", "-q", "--tls", "--read", "-o", str(path), *args),
                          capture_output=True, timeout=timeout)
    said = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, said
    assert_summary_lost_nothing(said)
    assert_index_is_a_scan(path)
    return Capture(path), said


def assert_index_is_a_scan(path: Path) -> None:
    """The totals the recorder wrote in the index (TLS events included) are a scan's."""
    indexed = json.loads(subprocess.run(wtrec_cmd("info", "--json", str(path)),
                                        capture_output=True, check=True).stdout)
    scanned = json.loads(subprocess.run(wtrec_cmd("info", "--json", "-"), input=path.read_bytes(),
                                        capture_output=True, check=True).stdout)
    assert (indexed["source"], scanned["source"]) == ("index", "scan")
    for key in ("events", "lost", "processes", "fds"):
        assert indexed[key] == scanned[key], key


def check_connection(capture: Capture, seen: SeenRequest, port: int, comm: bytes) -> None:
    """The request and the reply are in the capture as plaintext on the tcp connection."""
    sent = request_bytes(seen)
    writes = [(e, i) for e, i in capture.tls("out") if e.comm == comm]
    first = next(((e, i) for e, i in writes if e.data.startswith(sent[:30])), None)
    assert first is not None, [e.data[:60] for e, _ in writes]
    event, identity = first
    assert event.fd >= 0 and identity is not None, event
    assert identity.kind == "tcp" and identity.remote == f"127.0.0.1:{port}", identity
    assert event.tls is not None and event.tls.fd_source in ("in-call", "thread", "connection")
    on_connection = [(e, i) for e, i in capture.events
                     if e.pid == event.pid and e.fd == event.fd and i == identity]
    plaintext_out = b"".join(e.data[:max(e.ret or 0, 0)] for e, _ in on_connection
                             if e.layer == "tls" and e.direction == "out")
    assert plaintext_out == sent
    plaintext_in = b"".join(e.data for e, _ in on_connection
                            if e.layer == "tls" and e.direction == "in")
    assert plaintext_in.startswith(b"HTTP/1.1 200 OK\r\n") and plaintext_in.endswith(BODY)
    # What the socket carried is ciphertext; a library doing its own socket I/O
    # does it inside the call, so those syscalls are marked as made there
    # (node's libuv does it outside, through memory buffers).
    on_socket = [e for e, _ in on_connection if e.layer == "syscall"]
    assert on_socket and all(plaintext_out[:16] not in e.data for e in on_socket)
    if event.tls.fd_source == "in-call":
        assert any(e.tls_call_ns == event.tls.call_ns for e in on_socket)
    assert capture.lost == 0 and capture.ended
    assert capture.header.filters.tls


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_client_command_is_recorded_in_plaintext(https, workdir, client):
    command = CLIENTS[client](https.url(f"/cmd-{client}"))
    need(command[0])
    before = len(https.requests)
    capture, said = record(workdir, "--", *command)
    seen = https.requests[before:]
    assert [(r.method, r.path) for r in seen] == [("GET", f"/cmd-{client}")]
    assert f"({LIBRARIES[client]}):" in said, said
    comm = {"python": Path(sys.executable).name.encode()[:15]}.get(
        client, command[0].encode()[:15])
    check_connection(capture, seen[0], https.port, comm)


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_a_client_recorded_by_comm(https, workdir, client):
    """-c COMM: the system's libraries (and what the comm's program loads) are probed."""
    command = CLIENTS[client](https.url(f"/comm-{client}"))
    need(command[0])
    if client == "python":  # this process (the server) is python too: run the client
        alias = Path(workdir) / "pyfetch"  # under a name of its own (comm is the file's name)
        alias.symlink_to(Path(command[0]).resolve())
        command = [str(alias), *command[1:]]
    comm = Path(command[0]).name.encode()[:15]
    recorder_path = Path(workdir) / "comm.wtrace"
    recorder = Recorder("--tls", "--read", "-c", comm.decode(), "-o", str(recorder_path))
    before = len(https.requests)
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stdout == BODY, done.stderr
    said = recorder.finish()
    assert f"({LIBRARIES[client]}):" in said, said
    seen = https.requests[before:]
    assert [r.path for r in seen] == [f"/comm-{client}"]
    capture = Capture(recorder_path)
    check_connection(capture, seen[0], https.port, comm)
    # The in-kernel comm filter applies to TLS calls: the server (this
    # python process, in libssl too) is not in the capture.
    assert {e.comm for e, _ in capture.events} == {comm}


def test_python_post_body_is_exact(https, workdir):
    body = bytes(range(256)) * 20 + b"\x1b[2J secret=hunter2"
    script = ("import ssl, sys, urllib.request\n"
              "ctx = ssl._create_unverified_context()\n"
              "req = urllib.request.Request(sys.argv[1], data=bytes.fromhex(sys.argv[2]))\n"
              "sys.stdout.buffer.write(urllib.request.urlopen(req, context=ctx).read())\n")
    before = len(https.requests)
    capture, _said = record(workdir, "-s", "65536", "--", sys.executable, "-c", script,
                            https.url("/post"), body.hex())
    seen = https.requests[before:]
    assert [r.body for r in seen] == [body]
    writes = b"".join(e.data for e, _ in capture.tls("out"))
    assert request_bytes(seen[0]) in writes
    reads = b"".join(e.data for e, _ in capture.tls("in"))
    assert reads.endswith(body)  # the echo, received through SSL_read_ex


def sample_server(samples: Path, port: int, program: str = "server-tls") -> subprocess.Popen:
    """One of samples/' servers (wolfSSL's by default), once it says it is listening."""
    server = subprocess.Popen([str(samples / program), str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    read_line_until(server.stderr, "listening", 10, [])
    return server


def test_wolfssl_samples_recorded_by_comm(samples, workdir):
    if not (samples / "client-tls").exists():
        pytest.fail("samples/client-tls was not built: libwolfssl-dev missing?")
    port = free_port()
    path = Path(workdir) / "wolf.wtrace"
    lines = [b"GET /hello HTTP/1.1\n", b"secret=hunter2\n", b"\x1b]0;title\x07 \xff\xfe\n"]
    recorder = Recorder("--tls", "--read", "-c", "server-tls", "-c", "client-tls",
                        "-o", str(path))
    server = sample_server(samples, port)
    try:
        client = subprocess.run([str(samples / "client-tls"), "127.0.0.1", str(port)],
                                input=b"".join(lines), capture_output=True, timeout=60)
        assert client.returncode == 0, client.stderr
    finally:
        server.terminate()
        server.wait(10)
    said = recorder.finish()
    assert "libwolfssl" in said and "(wolfSSL): wolfSSL_write wolfSSL_read" in said, said
    capture = Capture(path)
    sent = [(e, i) for e, i in capture.tls("out") if e.comm == b"client-tls"]
    assert [e.data for e, _ in sent] == lines
    assert all(e.syscall == "wolfSSL_write" and i is not None and i.kind == "tcp"
               and i.remote == f"127.0.0.1:{port}" for e, i in sent)
    received = [e.data for e, _ in capture.tls("in") if e.comm == b"server-tls" and e.data]
    assert received == lines
    replies = [e.data for e, _ in capture.tls("in") if e.comm == b"client-tls" and e.data]
    assert len(replies) == len(lines) and all(replies)


def test_a_program_without_tls_library_is_said_and_recorded(samples, workdir):
    """-p of a process mapping no TLS library: the clear note, then syscalls as before."""
    port = free_port()
    server = sample_server(samples, port, "server-tcp")
    try:
        path = Path(workdir) / "plain.wtrace"
        recorder = Recorder("--tls", "-p", str(server.pid), "--follow", "-o", str(path))
        said_early = "".join(recorder.stderr_lines)
        assert (f"--tls: no TLS library found in pid {server.pid} (looked for OpenSSL, GnuTLS, "
                "wolfSSL entry points in") in said_early, said_early
        assert said_early.splitlines()[0].endswith("objects); syscalls only"), said_early
        client = subprocess.run([str(samples / "client-tcp"), "127.0.0.1", str(port)],
                                input=b"plain line\n", capture_output=True, timeout=30)
        assert client.returncode == 0
        said = recorder.finish()
    finally:
        server.terminate()
        server.wait(10)
    capture = Capture(path)
    assert not capture.header.filters.tls
    writes = [e for e, _ in capture.events if e.direction == "out"]
    assert writes and all(e.layer == "syscall" for e in writes), (said, capture.events)


def test_a_command_that_makes_no_tls_call_gets_the_end_note(samples, workdir):
    port = free_port()
    server = sample_server(samples, port, "server-tcp")
    try:
        path = Path(workdir) / "none.wtrace"
        done = subprocess.run(wtrec_cmd("record", "-q", "--tls", "-o", str(path), "--",
                                        str(samples / "client-tcp"), "127.0.0.1", str(port)),
                              input=b"one line\n", capture_output=True, timeout=120)
    finally:
        server.terminate()
        server.wait(10)
    said = done.stderr.decode()
    assert done.returncode == 0, said
    assert "--tls: no TLS library call was recorded (probed" in said, said
    capture = Capture(path)
    assert any(e.data == b"one line\n" for e, _ in capture.events)
    assert not any(e.layer == "tls" for e, _ in capture.events)


BURST_CLIENT = (
    "import socket, ssl, sys\n"
    "port, n = int(sys.argv[1]), int(sys.argv[2])\n"
    "ctx = ssl._create_unverified_context()\n"
    "with ctx.wrap_socket(socket.create_connection(('127.0.0.1', port))) as s:\n"
    "    s.sendall(b'POST /burst HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: %d\\r\\n\\r\\n'"
    " % (64 * n))\n"
    "    for i in range(n):\n"
    "        s.sendall(b'%063d\\n' % i)\n"
    "    while s.recv(65536):\n"
    "        pass\n")


def test_loss_accounting_is_exact_for_tls_events(https, workdir):
    """A 4 KiB buffer and a burst of SSL_write_ex calls: each call is an event or a loss.

    --syscalls pwrite64 (which the client never calls) leaves only TLS events,
    and without --read only the write entry points are probed, so the count
    is known: the request head plus one call per line.
    """
    lines = 3000
    path = Path(workdir) / "burst.wtrace"
    done = subprocess.run(
        wtrec_cmd("record", "-q", "--tls", "--syscalls", "pwrite64", "--buffer-size", "4K",
                  "-o", str(path), "--", sys.executable, "-c", BURST_CLIENT, str(https.port),
                  str(lines)), capture_output=True, timeout=300)
    said = done.stderr.decode()
    assert done.returncode == 0, said
    assert "SSL_read" not in said and "SSL_write_ex" in said  # reads need --read
    body = b"".join(b"%063d\n" % i for i in range(lines))
    assert https.requests[-1].body == body
    capture = Capture(path)
    events = [e for e, _ in capture.events]
    assert all(e.layer == "tls" and e.syscall == "SSL_write_ex" for e in events)
    assert len(events) + capture.lost == lines + 1, (len(events), capture.lost)
    numbered = [e.data for e in events if len(e.data) == 64]
    assert all(data in body for data in numbered) and len(set(numbered)) == len(numbered)
    assert f"{len(events)} events," in said and f", {capture.lost} lost" in said


def test_wolfssl_server_recorded_by_pid(samples, workdir):
    """-p: the TLS library is found in what the process maps; the client is not traced."""
    port = free_port()
    path = Path(workdir) / "pid.wtrace"
    server = sample_server(samples, port)
    try:
        recorder = Recorder("--tls", "--read", "-p", str(server.pid), "-o", str(path))
        said_early = "".join(recorder.stderr_lines)
        assert "libwolfssl" in said_early and "(wolfSSL): wolfSSL_write wolfSSL_read" in said_early
        assert "libssl" not in said_early  # only what the process maps
        # The server sat in accept() before the probes came: that first
        # accept's return names no descriptor (its entry was never seen).
        for line in (b"first\n", b"by pid\n"):
            client = subprocess.run([str(samples / "client-tls"), "127.0.0.1", str(port)],
                                    input=line, capture_output=True, timeout=60)
            assert client.returncode == 0, client.stderr
        recorder.finish()
    finally:
        server.terminate()
        server.wait(10)
    capture = Capture(path)
    assert {e.comm for e, _ in capture.events} == {b"server-tls"}
    received = [(e, i) for e, i in capture.tls("in") if e.data]
    assert [e.data for e, _ in received] == [b"first\n", b"by pid\n"]
    assert received[1][1] is not None and received[1][1].local == f"127.0.0.1:{port}"


def test_curl_with_the_perf_buffer(https, workdir):
    """The TLS records go through the per-CPU perf buffer (kernels before 5.8) as well."""
    need("curl")
    before = len(https.requests)
    capture, said = record(workdir, "--perf-buffer", "--", *CLIENTS["curl"](https.url("/perf")))
    seen = https.requests[before:]
    assert [r.path for r in seen] == ["/perf"] and "(perf buffer" in said
    check_connection(capture, seen[0], https.port, b"curl")


def test_a_child_of_the_command_is_followed(https, workdir):
    """The in-kernel follow filter applies to TLS calls: curl run by a shell is recorded."""
    need("curl")
    before = len(https.requests)
    url = https.url("/child")
    capture, _said = record(workdir, "--", "sh", "-c", f"curl -sk {url}; true")
    seen = https.requests[before:]
    assert [r.path for r in seen] == ["/child"]
    check_connection(capture, seen[0], https.port, b"curl")
    assert len({e.pid for e, _ in capture.events}) >= 2  # the shell and its child


def uprobe_program_runs(pid: int) -> int:
    """How often the uprobe programs a process holds have run (kernel.bpf_stats_enabled)."""
    runs = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            fields = dict(line.split(":\t", 1) for line in
                          Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                          if ":\t" in line)
        except OSError:  # closed meanwhile
            continue
        if fields.get("prog_type", "").strip() == "2":  # BPF_PROG_TYPE_KPROBE: uprobes too
            runs += int(fields.get("run_cnt", "0"))
    return runs


def test_probes_of_pid_alone_spare_other_processes(samples, workdir):
    """-p alone binds the uprobes to that process: another wolfSSL pair pays no trap.

    Counted by the kernel's own statistics of the recorder's uprobe programs:
    with -c the other pair's calls run them (the count works), with -p of an
    idle server they never run."""
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = stats.read_text().strip()
    idle_port, busy_port = free_port(), free_port()
    idle, busy = sample_server(samples, idle_port), sample_server(samples, busy_port)
    runs = {}
    try:
        stats.write_text("1")
        for how in (("-c", "client-tls"), ("-p", str(idle.pid))):
            recorder = Recorder("--tls", "--read", *how, "-o", str(Path(workdir) / "bound.wtrace"),
                                "--force")
            client = subprocess.run([str(samples / "client-tls"), "127.0.0.1", str(busy_port)],
                                    input=b"one\ntwo\n", capture_output=True, timeout=60)
            assert client.returncode == 0, client.stderr
            runs[how[0]] = uprobe_program_runs(recorder.proc.pid)
            recorder.finish()
    finally:
        stats.write_text(before)
        for server in (idle, busy):
            server.terminate()
            server.wait(10)
    assert runs["-c"] >= 4  # two writes and two reads of the client, entry and return
    assert runs["-p"] == 0


def test_a_command_with_its_own_libwolfssl_build_is_probed_there(samples, workdir):
    """-- CMD: the libraries the command's loader will load are searched, so a libwolfssl
    in a build tree (found through RPATH, not the system's) is probed and recorded."""
    system = sorted(Path("/usr/lib/x86_64-linux-gnu").glob("libwolfssl.so.*"))
    if not system or not shutil.which("cc"):
        pytest.fail("libwolfssl and cc are needed (scripts/bootstrap setup installs them)")
    tree = Path(workdir) / "wolfssl-build" / "lib"
    tree.mkdir(parents=True)
    copy = tree / system[0].name
    shutil.copy(system[0], copy)
    (tree / "libwolfssl.so").symlink_to(copy.name)
    client = Path(workdir) / "client-tls"
    built = subprocess.run(["cc", "-O1", "-o", str(client), str(samples / "client-tls.c"),
                            f"-L{tree}", f"-Wl,-rpath,{tree}", "-lwolfssl"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    shutil.copy(samples / "server-cert.pem", client.parent / "server-cert.pem")
    port = free_port()
    server = sample_server(samples, port)
    path = Path(workdir) / "tree.wtrace"
    try:
        done = subprocess.run(wtrec_cmd("record", "-q", "--tls", "--read", "-o", str(path), "--",
                                        str(client), "127.0.0.1", str(port)),
                              input=b"from the build tree\n", capture_output=True, timeout=120)
    finally:
        server.terminate()
        server.wait(10)
    said = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, said
    assert f"--tls: {copy} (wolfSSL): wolfSSL_write wolfSSL_read" in said, said
    # The client maps only the copy, so these came through the copy's probes.
    assert [e.data for e, _ in Capture(path).tls("out")] == [b"from the build tree\n"]
