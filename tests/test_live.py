"""Live eBPF: real programs attached to real processes (root and bcc needed)."""

import io
import os
import shutil
import subprocess

import pytest
from conftest import wtrec_cmd
from live_helpers import (
    Recorder,
    Server,
    assert_nothing_lost,
    expected_payload,
    run_client,
    start_writer,
)

from wtrec.format import CaptureReader
from wtrec.records import End, Header, IoEvent

LINES = [f"line {i:02d} of 23: the quick brown fox {'*' * i}\n".encode() for i in range(23)]


# Every test here attaches real BPF programs: skip on a laptop, fail under CI;
# `pytest -m "not live"` leaves them out.
pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live")]


@pytest.fixture
def server(samples):
    srv = Server(samples)
    yield srv
    srv.stop()


def read_capture(path) -> tuple[list, CaptureReader]:
    with open(path, "rb") as stream:
        reader = CaptureReader(stream)
        return list(reader), reader


def check_client_capture(records, reader, pid, fd):
    """Exactly the 23 lines on the socket, in order, nothing from anyone else."""
    assert isinstance(records[0], Header) and not reader.truncated
    events = [r for r in records if isinstance(r, IoEvent)]
    assert all(e.pid == pid and e.tid == pid and e.comm == b"client-tcp" for e in events)
    on_socket = [e for e in events if e.fd == fd]
    assert [e.data for e in on_socket] == LINES
    assert all(e.count == len(e.data) for e in on_socket)
    assert {e.fd for e in events} <= {fd, 1, 2}  # replies printed, the greeting
    assert_nothing_lost(records)


@pytest.mark.parametrize("buffer_args", [[], ["--perf-buffer"]], ids=["ringbuf", "perf"])
def test_client_lines_are_captured_exactly(samples, server, workdir, buffer_args):
    out = os.path.join(workdir, "client.wtrace")
    recorder = Recorder("-c", "client-tcp", "-o", out, *buffer_args)
    pid, fd = run_client(samples, server.port, LINES)
    said = recorder.stop()
    assert recorder.proc.returncode == 0, said
    records, reader = read_capture(out)
    check_client_capture(records, reader, pid, fd)
    events = sum(isinstance(r, IoEvent) for r in records)
    assert f"wtrec: {events} events, " in said and ", 0 lost -> " in said
    assert records[0].buffer == ("perf" if buffer_args else "ringbuf")


@pytest.mark.skipif(not shutil.which("setpriv"), reason="needs setpriv")
def test_capture_belongs_to_the_sudo_user_who_shows_it_without_root(samples, server, workdir):
    os.chown(workdir, 65534, 65534)  # the recorder creates its file as the sudo user
    out = os.path.join(workdir, "mine.wtrace")
    nobody = {"SUDO_UID": "65534", "SUDO_GID": "65534"}
    recorder = Recorder("-c", "client-tcp", "-o", out, env=nobody)
    run_client(samples, server.port, LINES)
    said = recorder.finish()
    assert "owned by uid 65534" in said
    info = os.stat(out)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (65534, 65534, 0o600)
    shown = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            *wtrec_cmd("show", out)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for line in LINES:
        assert '"' + line.decode().replace("\n", "\\n") + '"' in shown.stdout
    hexed = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            *wtrec_cmd("show", out, "--hex")], capture_output=True, text=True)
    assert hexed.returncode == 0 and "|line 00 of 23: t|" in hexed.stdout


def test_no_chown_keeps_the_file_roots(samples, server, workdir):
    os.chown(workdir, 65534, 65534)  # created where the sudo user may, then given to root
    out = os.path.join(workdir, "root.wtrace")
    recorder = Recorder("-c", "client-tcp", "-o", out, "--no-chown", env={"SUDO_UID": "65534"})
    pid, fd = run_client(samples, server.port, LINES[:1])
    said = recorder.finish()
    assert "owned by" not in said
    assert os.stat(out).st_uid == 0
    events = [r for r in read_capture(out)[0] if isinstance(r, IoEvent) and r.fd == fd]
    assert [(e.pid, e.data) for e in events] == [(pid, LINES[0])]


def test_pid_filter_snaplen_and_count(workdir):
    writer = start_writer(10, 100, 5000, 20000)
    out = os.path.join(workdir, "pid.wtrace")
    recorder = Recorder("-p", str(writer.pid), "-s", "16384", "--count", "3", "-o", out)
    writer.stdin.write(b"go\n")
    writer.stdin.close()
    assert writer.wait(30) == 0
    recorder.proc.wait(30)  # --count stops it by itself
    recorder.finish()
    records, reader = read_capture(out)
    assert not reader.truncated
    assert_nothing_lost(records)
    events = [r for r in records if isinstance(r, IoEvent)]
    assert [(e.count, e.data) for e in events] == [
        (10, expected_payload(10)), (100, expected_payload(100)),
        (5000, expected_payload(5000))]
    assert all(e.pid == writer.pid for e in events)


def test_short_snaplen_keeps_the_requested_count(workdir):
    writer = start_writer(16384, 40)
    out = os.path.join(workdir, "short.wtrace")
    recorder = Recorder("-p", str(writer.pid), "-s", "16", "-o", out, "--perf-buffer")
    writer.stdin.write(b"go\n")
    writer.stdin.close()
    assert writer.wait(30) == 0
    recorder.finish()
    records, reader = read_capture(out)
    assert not reader.truncated
    assert_nothing_lost(records)
    events = [r for r in records if isinstance(r, IoEvent)]
    assert [(e.count, e.data) for e in events] == [
        (16384, expected_payload(16384)[:16]), (40, expected_payload(40)[:16])]
    assert all(e.truncated for e in events)


def test_biggest_snaplen_with_the_ring_buffer(workdir):
    writer = start_writer(1 << 20)
    out = os.path.join(workdir, "big.wtrace")
    recorder = Recorder("-p", str(writer.pid), "-s", "max", "-o", out)
    writer.stdin.write(b"go\n")
    writer.stdin.close()
    assert writer.wait(30) == 0
    recorder.finish()
    records, reader = read_capture(out)
    assert not reader.truncated
    assert_nothing_lost(records)
    events = [r for r in records if isinstance(r, IoEvent)]
    assert [(e.count, e.data) for e in events] == [(1 << 20, expected_payload(1 << 20))]


def test_stream_to_stdout_and_stop_on_sigterm(samples, server):
    recorder = Recorder("-c", "client-tcp", "-o", "-", stdout=subprocess.PIPE)
    pid, fd = run_client(samples, server.port, LINES)
    recorder.proc.send_signal(15)
    data = recorder.proc.stdout.read()
    recorder.finish()
    reader = CaptureReader(io.BytesIO(data))
    check_client_capture(list(reader), reader, pid, fd)


def test_duration_stops_an_idle_recording(workdir):
    out = os.path.join(workdir, "idle.wtrace")
    recorder = Recorder("-c", "no-such-comm", "--duration", "0.5", "-o", out)
    assert recorder.proc.wait(30) == 0
    assert "wtrec: 0 events, 0 bytes, 0 lost -> " in recorder.stop()
    records, reader = read_capture(out)
    assert [type(r) for r in records] == [Header, End] and not reader.truncated


def test_live_status_line_on_a_terminal_and_quiet_silences_it(workdir):
    import pty
    import time

    outputs = {}
    for quiet in (False, True):
        leader, follower = pty.openpty()
        out = os.path.join(workdir, f"status-{quiet}.wtrace")
        args = ["record", "-c", "no-such-comm", "--duration", "1.5", "-o", out]
        proc = subprocess.Popen(wtrec_cmd(*args, *(["-q"] if quiet else [])),
                                stderr=follower, stdout=subprocess.DEVNULL)
        os.close(follower)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the recorder closed its side of the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(30) == 0, seen
        os.close(leader)
        outputs[quiet] = seen.decode(errors="replace")
    assert "\r\x1b[Kwtrec: 0 events, 0 bytes, 0 lost, 0 events/s" in outputs[False]
    assert "events/s" not in outputs[True]
    assert "wtrec: 0 events, 0 bytes, 0 lost -> " in outputs[True]
