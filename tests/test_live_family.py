"""Live eBPF, the whole write family: real clients, fds, children, big writes, loss."""

import os
import random
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import wtrec_cmd
from live_helpers import (
    Recorder,
    Server,
    Sink,
    assert_nothing_lost,
    assert_summary_lost_nothing,
    free_port,
    run_client,
    run_recorded,
)

from wtrec.format import CaptureReader
from wtrec.records import End, FdInfo, IoEvent, Lost

LINES = [f"line {i:02d} of 23\n".encode() for i in range(23)]
PY = [sys.executable, "-S", "-B", "-c"]


# Every test here attaches real BPF programs: skip on a laptop, fail under CI;
# `pytest -m "not live"` leaves them out.
pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live")]


def read(path):
    with open(path, "rb") as stream:
        reader = CaptureReader(stream)
        records = list(reader)
    assert not reader.truncated
    return records


def events_of(records, direction=None):
    return [r for r in records if isinstance(r, IoEvent)
            and (direction is None or r.direction == direction)]


def events_to(records, port: int, direction=None) -> list[IoEvent]:
    """Events on an fd that the capture names, at that moment, a TCP connection to port."""
    current = {}
    found = []
    for record in records:
        if isinstance(record, FdInfo):
            current[(record.pid, record.fd)] = record.identity
        elif isinstance(record, IoEvent):
            identity = current.get((record.pid, record.fd))
            if (identity is not None and identity.kind == "tcp"
                    and identity.remote == f"127.0.0.1:{port}"
                    and (direction is None or record.direction == direction)):
                found.append(record)
    return found


def sent_on(records, port: int) -> bytes:
    """What the capture says was written to 127.0.0.1:port: each event's written part."""
    events = events_to(records, port, "out")
    assert events, [r for r in records if isinstance(r, FdInfo)]
    return b"".join(e.data[:e.ret] for e in events if e.ret > 0)


def test_curl_request_is_captured_byte_exact(samples, workdir):
    if not shutil.which("curl"):
        pytest.fail("curl is missing (scripts/bootstrap installs it)")
    sink = Sink(http=True)
    out = os.path.join(workdir, "curl.wtrace")
    result = run_recorded(out, ["curl", "-s", "-o", "/dev/null",
                                f"http://127.0.0.1:{sink.port}/wtrec?q=1"])
    assert result.returncode == 0, result.stderr
    assert_summary_lost_nothing(result.stderr)
    request = sink.wait()
    assert request.startswith(b"GET /wtrec?q=1 HTTP/1.1\r\n")
    records = read(out)
    assert sent_on(records, sink.port) == request
    syscalls = {e.syscall for e in events_to(records, sink.port, "out")}
    assert syscalls <= {"sendto", "write", "sendmsg", "writev"} and syscalls


def test_redis_cli_command_and_reply(samples, workdir):
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.fail("redis-server/redis-cli are missing (scripts/bootstrap installs them)")
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no", "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        out = os.path.join(workdir, "redis.wtrace")
        result = run_recorded(out, ["redis-cli", "-p", str(port), "SET", "wtrec-key",
                                    "hello world"], "--read")
        assert result.returncode == 0, result.stderr
        assert_summary_lost_nothing(result.stderr)
    finally:
        server.terminate()
        server.wait(10)
    records = read(out)
    assert sent_on(records, port) == b"*3\r\n$3\r\nSET\r\n$9\r\nwtrec-key\r\n$11\r\nhello world\r\n"
    received = b"".join(e.data for e in events_to(records, port, "in"))
    assert received == b"+OK\r\n"


def test_python_sendall_of_100k_is_byte_exact(samples, workdir):
    payload = random.Random(7).randbytes(100_000)
    sink = Sink()
    out = os.path.join(workdir, "sendall.wtrace")
    code = ("import socket, sys\n"
            f"s = socket.create_connection(('127.0.0.1', {sink.port}))\n"
            "s.sendall(open(sys.argv[1], 'rb').read())\n"
            "s.close()\n")
    blob = os.path.join(workdir, "payload.bin")
    with open(blob, "wb") as f:
        f.write(payload)
    result = run_recorded(out, [*PY, code, blob], "-s", "max")
    assert result.returncode == 0, result.stderr
    assert_summary_lost_nothing(result.stderr)
    assert sink.wait() == payload
    records = read(out)
    assert sent_on(records, sink.port) == payload
    assert {e.syscall for e in events_to(records, sink.port)} == {"sendto"}


@pytest.mark.parametrize("buffer_args", [[], ["--perf-buffer"]], ids=["ringbuf", "perf"])
def test_a_1mib_socket_write_arrives_whole(samples, workdir, buffer_args):
    payload = random.Random(1).randbytes(1 << 20)
    sink = Sink()
    out = os.path.join(workdir, "big.wtrace")
    code = ("import os, socket, sys\n"
            f"s = socket.create_connection(('127.0.0.1', {sink.port}))\n"
            "data = open(sys.argv[1], 'rb').read()\n"
            "assert os.write(s.fileno(), data) == len(data)\n"
            "s.close()\n")
    blob = os.path.join(workdir, "payload.bin")
    with open(blob, "wb") as f:
        f.write(payload)
    result = run_recorded(out, [*PY, code, blob], "-s", "max", *buffer_args)
    assert result.returncode == 0, result.stderr
    assert_summary_lost_nothing(result.stderr)
    assert sink.wait() == payload
    records = read(out)
    big = events_to(records, sink.port)
    assert len(big) == 1
    assert (big[0].syscall, big[0].count, big[0].ret) == ("write", 1 << 20, 1 << 20)
    assert big[0].data == payload


def test_writev_gathers_iovecs_in_order_up_to_the_snaplen(samples, workdir):
    parts = [b"alpha-", b"", b"beta-", b"gamma" * 5000, b"-omega"]
    code = ("import os\n"
            "fd = os.open('/dev/null', os.O_WRONLY)\n"
            f"os.writev(fd, {parts!r})\n"
            f"os.writev(fd, {parts[:3]!r})\n")
    for snaplen, expect in (("max", b"".join(parts)), ("10", b"".join(parts)[:10])):
        out = os.path.join(workdir, f"writev-{snaplen}.wtrace")
        result = run_recorded(out, [*PY, code], "-s", snaplen, "--syscalls", "writev")
        assert result.returncode == 0, result.stderr
        assert_summary_lost_nothing(result.stderr)
        events = events_of(read(out))
        assert [(e.syscall, e.count, e.ret) for e in events] == [
            ("writev", 25_017, 25_017), ("writev", 11, 11)]
        assert events[0].data == expect
        assert events[1].data == b"alpha-beta-"[:int(snaplen) if snaplen != "max" else None]


def test_a_failed_write_keeps_its_payload_marked_not_sent(samples, workdir):
    code = ("import os\n"
            "fd = os.open('/dev/null', os.O_RDONLY)\n"
            "try:\n"
            "    os.write(fd, b'never sent')\n"
            "except OSError:\n"
            "    pass\n")
    out = os.path.join(workdir, "failed.wtrace")
    assert run_recorded(out, [*PY, code]).returncode == 0
    (event,) = events_of(read(out))
    assert (event.ret, event.data, event.failed) == (-9, b"never sent", True)
    shown = subprocess.run(wtrec_cmd("show", out), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "count 10, failed: EBADF (payload not sent)" in shown.stdout


def test_read_captures_both_sides_of_the_conversation(samples, workdir):
    server = Server(samples)
    try:
        out = os.path.join(workdir, "both.wtrace")
        recorder = Recorder("-c", "client-tcp", "--read", "-o", out)
        pid, fd = run_client(samples, server.port, LINES)
        recorder.finish()
    finally:
        server.stop()
    records = read(out)
    assert_nothing_lost(records)
    on_socket = events_to(records, server.port)
    assert {e.fd for e in on_socket} == {fd}
    assert [e.data for e in on_socket if e.direction == "out"] == LINES
    replies = [e for e in on_socket if e.direction == "in"]
    assert [e.data for e in replies] == [b"I hear ya fa shizzle!\n"] * 23
    assert all(e.syscall == "read" and e.ret == 22 and e.count == 4095 for e in replies)
    # Outgoing line, then its reply, in capture order.
    kinds = [e.direction for e in on_socket]
    assert kinds == ["out", "in"] * 23
    (identity,) = {r.identity for r in records if isinstance(r, FdInfo) and r.fd == fd
                   and r.identity.kind == "tcp"}
    assert identity.remote == f"127.0.0.1:{server.port}"
    assert identity.local.startswith("127.0.0.1:") and not identity.local.endswith(":0")
    stdin = b"".join(e.data for e in events_of(records, "in") if e.fd == 0)
    assert stdin == b"".join(LINES)


def test_an_fd_number_reused_after_close_gets_its_new_identity(samples, workdir):
    sink = Sink()
    path = os.path.join(workdir, "a.txt")
    code = ("import os, socket\n"
            f"fd = os.open({path!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
            "os.write(fd, b'to-file')\n"
            "os.close(fd)\n"
            "s = socket.socket()\n"
            "assert s.fileno() == fd\n"
            f"s.connect(('127.0.0.1', {sink.port}))\n"
            "os.write(fd, b'to-socket')\n"
            "s.close()\n"
            "r, w = os.pipe()\n"
            "assert w == fd + 1 or r == fd\n"
            "os.write(w, b'to-pipe')\n")
    out = os.path.join(workdir, "reuse.wtrace")
    result = run_recorded(out, [*PY, code])
    assert result.returncode == 0, result.stderr
    assert_summary_lost_nothing(result.stderr)
    records = read(out)
    named = [(r.identity.kind, r.identity.path, r.identity.remote) for r in records
             if isinstance(r, FdInfo)]
    assert named[:2] == [("file", path, None), ("tcp", None, f"127.0.0.1:{sink.port}")]
    assert named[2][0] == "pipe"
    done = subprocess.run(wtrec_cmd("show", out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    assert f"(file {path})" in shown and f"-> 127.0.0.1:{sink.port})" in shown
    assert "(pipe)" in shown


def test_command_runs_as_the_sudo_user_with_children_and_its_exit_status(samples, workdir):
    out = os.path.join(workdir, "cmd.wtrace")
    os.chmod(workdir, 0o777)
    result = run_recorded(out, ["sh", "-c", "id -u; echo grandchild-$$ | cat; exit 3"],
                          env={"SUDO_UID": "65534", "SUDO_GID": "65534"})
    assert result.returncode == 3, result.stderr
    events = events_of(read(out))
    assert {e.uid for e in events} == {65534}
    comms = {e.comm for e in events}
    assert {b"id", b"cat", b"sh"} <= comms
    assert any(e.comm == b"id" and e.data == b"65534\n" for e in events)
    assert any(e.comm == b"cat" and e.data.startswith(b"grandchild-") for e in events)


def test_only_the_command_is_captured_not_wtrecs_launcher(samples, workdir):
    # The held command starts as a small interpreter that execs it on release;
    # that interpreter's own reads and writes must not be in the capture.
    out = os.path.join(workdir, "echo.wtrace")
    result = run_recorded(out, ["/bin/echo", "hi"], "--read")
    assert result.returncode == 0, result.stderr
    events = events_of(read(out))
    assert {e.comm for e in events} == {b"echo"}  # its loader reads libc: that is echo's own
    assert [e.data for e in events if e.direction == "out"] == [b"hi\n"]


def test_pid_follow_adds_the_children_of_a_running_process(samples, workdir):
    code = ("import os, sys\n"
            "sys.stdin.readline()\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.write(1, b'from-child')\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "os.write(1, b'from-parent')\n")
    parent = subprocess.Popen([*PY, code], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    out = os.path.join(workdir, "follow.wtrace")
    recorder = Recorder("-p", str(parent.pid), "--follow", "-o", out)
    parent.stdin.write(b"go\n")
    parent.stdin.close()
    assert parent.wait(30) == 0
    recorder.finish()
    records = read(out)
    assert_nothing_lost(records)
    events = events_of(records)
    by_data = {e.data: e.pid for e in events}
    assert by_data[b"from-parent"] == parent.pid
    assert by_data[b"from-child"] not in (parent.pid, None)


STRESS = ("import os, sys\n"
          "procs, writes = int(sys.argv[1]), int(sys.argv[2])\n"
          "children = []\n"
          "for p in range(procs):\n"
          "    pid = os.fork()\n"
          "    if pid == 0:\n"
          "        fd = os.open('/dev/null', os.O_WRONLY)\n"
          "        for i in range(writes):\n"
          "            os.write(fd, b'w%d-%06d\\n' % (p, i))\n"
          "        os._exit(0)\n"
          "    children.append(pid)\n"
          "for pid in children:\n"
          "    os.waitpid(pid, 0)\n")


def test_stress_4_processes_50000_writes_each_exact(samples, workdir):
    out = os.path.join(workdir, "stress.wtrace")
    started = time.monotonic()
    result = run_recorded(out, [*PY, STRESS, "4", "50000"], timeout=300)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert_summary_lost_nothing(result.stderr)
    records = read(out)
    events = events_of(records)
    lost = sum(r.count for r in records if isinstance(r, Lost))
    assert len(events) + lost == 200_000
    assert lost == 0, f"{lost} lost"
    per_pid: dict[int, list[bytes]] = {}
    for event in sorted(events, key=lambda e: e.seq):
        per_pid.setdefault(event.pid, []).append(event.data)
    assert len(per_pid) == 4
    for payloads in per_pid.values():
        writer = payloads[0][:3]
        assert payloads == [b"%s-%06d\n" % (writer[:2], i) for i in range(50_000)]
    assert [e.seq for e in events] == list(range(200_000))
    print(f"stress: 200000 events, 0 lost, recorded in {elapsed:.1f} s")


@pytest.mark.parametrize("buffer_args", [["--buffer-size", "64K"],
                                         ["--perf-buffer", "--buffer-size", "64K"]],
                         ids=["ringbuf", "perf"])
def test_stress_with_a_tiny_buffer_counts_every_loss(samples, workdir, buffer_args):
    out = os.path.join(workdir, "tiny.wtrace")
    result = run_recorded(out, [*PY, STRESS, "4", "50000"], *buffer_args, timeout=300)
    assert result.returncode == 0, result.stderr
    records = read(out)
    events = events_of(records)
    lost = sum(r.count for r in records if isinstance(r, Lost))
    end = records[-1]
    assert isinstance(end, End) and end.lost == lost and end.events == len(events)
    assert lost > 0 and len(events) + lost == 200_000
    assert f"{len(events)} events, " in result.stderr and f", {lost} lost -> " in result.stderr
    shown = subprocess.run(wtrec_cmd("show", out), capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "events lost (" in shown.stdout
    # What did arrive is still exact and in each writer's order.
    for pid in {e.pid for e in events}:
        numbers = [int(e.data[3:9]) for e in events if e.pid == pid]
        assert numbers == sorted(numbers)


def test_32bit_programs_are_flagged_and_their_syscalls_are_invisible(workdir):
    source = os.path.join(workdir, "hello32.c")
    binary = os.path.join(workdir, "hello32")
    with open(source, "w") as f:
        f.write('#include <unistd.h>\n'
                'int main(void) { char c; read(0, &c, 1);\n'
                '  write(1, "hello from 32-bit\\n", 18); return 0; }\n')
    built = subprocess.run(["gcc", "-m32", "-static", "-o", binary, source], capture_output=True,
                           text=True)
    if built.returncode != 0:
        pytest.fail(f"cannot build a 32-bit program (gcc-multilib, which scripts/bootstrap "
                    f"installs on amd64): {built.stderr.strip()[:200]}")
    out = os.path.join(workdir, "c32.wtrace")
    result = subprocess.run(wtrec_cmd("record", "-q", "--force", "-o", out, "--", binary),
                            input="x", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from 32-bit\n"
    assert f"warning: {binary} is a 32-bit program" in result.stderr
    assert events_of(read(out)) == []  # the documented limit, seen for real
    waiting = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    recorder = Recorder("-p", str(waiting.pid), "-o", os.path.join(workdir, "p32.wtrace"))
    waiting.communicate(b"x", timeout=30)
    assert waiting.returncode == 0
    said = recorder.finish()
    assert f"warning: process {waiting.pid} is a 32-bit program" in said
