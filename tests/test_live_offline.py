"""Live round trip: record real processes, then grep, filter, export and replay the capture."""

import os
import shutil
import subprocess

import pytest
from conftest import wtrec_cmd
from live_helpers import (
    Recorder,
    Server,
    Sink,
    assert_summary_lost_nothing,
    run_client,
    run_recorded,
)

from wtrec.format import CaptureReader
from wtrec.records import IoEvent

LINES = [f"round trip line {i:02d}: {'#' * i}\n".encode() for i in range(17)]


# Every test here attaches real BPF programs: skip on a laptop, fail under CI;
# `pytest -m "not live"` leaves them out.
pytestmark = [pytest.mark.live, pytest.mark.usefixtures("live")]


def wtrec(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(wtrec_cmd(*args), input=input, capture_output=True, timeout=120,
                          check=False)


def events_in(path) -> list[IoEvent]:
    with open(path, "rb") as f:
        return [r for r in CaptureReader(f) if isinstance(r, IoEvent)]


def test_record_then_grep_filter_export_and_replay_to_the_sample_server(samples, workdir):
    server = Server(samples)
    try:
        capture = os.path.join(workdir, "client.wtrace")
        recorder = Recorder("-c", "client-tcp", "-o", capture)
        pid, fd = run_client(samples, server.port, LINES)
        recorder.finish()

        found = wtrec("grep", "-F", "line 07", capture)
        assert found.returncode == 0 and f"pid {pid} fd {fd}".encode() in found.stdout
        assert wtrec("grep", "no such bytes", capture).returncode == 1

        only = os.path.join(workdir, "socket.wtrace")
        assert wtrec("filter", capture, "-o", only, "--pid", str(pid), "--fd",
                     str(fd)).returncode == 0
        assert [e.data for e in events_in(only)] == LINES

        raw = wtrec("export", only, "--format", "raw", "-o", "-")
        assert raw.returncode == 0 and raw.stdout == b"".join(LINES)
        pcap = os.path.join(workdir, "client.pcapng")
        assert wtrec("export", only, "--format", "pcapng", "-o", pcap).returncode == 0
        if not shutil.which("tshark"):
            pytest.fail("tshark is missing (scripts/bootstrap installs it)")
        payload = subprocess.run(["tshark", "-r", pcap, "-Y", f"tcp.dstport == {server.port}",
                                  "-T", "fields", "-e", "tcp.payload"],
                                 capture_output=True, text=True, check=True).stdout
        assert bytes.fromhex("".join(payload.split())) == b"".join(LINES)

        # Replay to the running server while wtrec records what the server reads.
        received = os.path.join(workdir, "server.wtrace")
        watcher = Recorder("-c", "server-tcp", "--syscalls", "read", "-o", received)
        replayed = wtrec("replay", capture, "--to", f"tcp://127.0.0.1:{server.port}",
                         "--pid", str(pid), "--fd", str(fd), "--show-response", "--wait", "1")
        watcher.finish()
        assert replayed.returncode == 0, replayed.stderr
        assert f"sent {len(LINES)} writes".encode() in replayed.stderr
        # Only our server: other server-tcp processes on the machine share its comm.
        reads = [e for e in events_in(received)
                 if e.pid == server.proc.pid and e.syscall == "read" and e.ret > 0]
        assert b"".join(e.data for e in reads) == b"".join(LINES)
        # The sample server answers each read with one reply line; replay shows them all.
        assert replayed.stdout == b"I hear ya fa shizzle!\n" * len(reads), replayed.stdout
    finally:
        server.stop()


def test_pcapng_export_of_a_captured_http_request_is_dissected_as_http(samples, workdir):
    if not shutil.which("curl") or not shutil.which("tshark"):
        pytest.fail("curl and tshark are needed (scripts/bootstrap installs them)")
    sink = Sink(http=True)
    capture = os.path.join(workdir, "curl.wtrace")
    result = run_recorded(capture, ["curl", "-s", "-o", "/dev/null",
                                    f"http://127.0.0.1:{sink.port}/wtrec/export?x=1"], "--read")
    assert result.returncode == 0, result.stderr
    assert_summary_lost_nothing(result.stderr)
    assert sink.wait().startswith(b"GET /wtrec/export?x=1 HTTP/1.1\r\n")
    pcap = os.path.join(workdir, "curl.pcapng")
    assert wtrec("export", capture, "--format", "pcapng", "-o", pcap).returncode == 0
    fields = subprocess.run(
        ["tshark", "-r", pcap, "-d", f"tcp.port=={sink.port},http", "-Y", "http",
         "-T", "fields", "-e", "http.request.method", "-e", "http.request.uri",
         "-e", "http.response.code"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("\t") for line in fields.splitlines()]
    assert ["GET", "/wtrec/export?x=1", ""] in rows, fields
    assert ["", "", "200"] in rows, fields
