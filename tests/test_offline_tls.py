"""Offline commands on a capture made with record --tls: --layer, show, grep, streams,
export raw/pcapng (tshark dissects the HTTP inside the TLS connection), replay,
scan/redact, the Python API. The capture is built with the writer, shaped like
what curl gave live (ciphertext syscalls marked, SSL_write/SSL_read events)."""

import json
import os
import shutil
import subprocess

import pytest
from conftest import build_capture, make_header
from typer.testing import CliRunner

import wtrec
from wtrec.cli.app import app
from wtrec.format import CaptureReader
from wtrec.records import Filters, IoEvent, TlsInfo

runner = CliRunner()
BASE = 1_000_000_000
LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
REQUEST = (b"GET /secret HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n"
           b"Authorization: Bearer abcdefghijklmnop\r\n\r\n")
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
CIPHER_OUT = b"\x17\x03\x03\x00\x40" + bytes(range(64))
CIPHER_IN = b"\x17\x03\x03\x00\x50" + bytes(range(80, 160))

pytestmark = pytest.mark.usefixtures("utc")


def tls(i: int, data: bytes, direction: str, *, count: int, ret: int, raw_ret: int,
        symbol: str) -> IoEvent:
    return IoEvent(BASE + i * 1_000_000, 10, 10, 1000, b"curl", 5, count, data, syscall=symbol,
                   ret=ret, seq=i, direction=direction, layer="tls",
                   tls=TlsInfo("openssl", LIBSSL, 0x5599, "in-call", BASE + i * 1_000_000 - 500,
                               raw_ret))


def cipher(i: int, data: bytes, direction: str, call: int, syscall: str) -> IoEvent:
    return IoEvent(BASE + i * 1_000_000 - 200, 10, 10, 1000, b"curl", 5, len(data), data,
                   syscall=syscall, ret=len(data),
                   direction=direction, tls_call_ns=BASE + call * 1_000_000 - 500)


def records() -> list:
    from wtrec.records import FdIdentity, FdInfo
    events = [
        cipher(1, CIPHER_OUT, "out", 1, "sendto"),
        tls(1, REQUEST, "out", count=len(REQUEST), ret=len(REQUEST), raw_ret=len(REQUEST),
            symbol="SSL_write"),
        cipher(2, CIPHER_IN, "in", 2, "recvfrom"),
        tls(2, b"", "in", count=16384, ret=-1, raw_ret=-1, symbol="SSL_read"),
        tls(3, REPLY, "in", count=16384, ret=len(REPLY), raw_ret=len(REPLY), symbol="SSL_read"),
        IoEvent(BASE + 4_000_000, 10, 10, 1000, b"curl", 1, 5, b"hello", syscall="write", ret=5),
    ]
    events = [IoEvent(**{**e.__dict__, "seq": n}) for n, e in enumerate(events)]
    return [FdInfo(BASE, 10, 5, FdIdentity("tcp", "127.0.0.1:40000", "127.0.0.1:8443")),
            *events[:5], FdInfo(BASE + 4_000_000, 10, 1, FdIdentity("tty", path="/dev/pts/1")),
            events[5]]


@pytest.fixture
def capture(tmp_path):
    header = make_header(format_minor=4, filters=Filters(
        command=("curl",), follow=True, tls=True,
        tls_targets=((LIBSSL, "openssl", ("SSL_write", "SSL_read")),)))
    path = tmp_path / "tls.wtrace"
    path.write_bytes(build_capture(records(), header=header))
    return path


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result


def test_show_names_each_layer(capture):
    out = run("show", str(capture)).output
    assert (f"  SSL_write fd 5 (tcp 127.0.0.1:40000 -> 127.0.0.1:8443)  count {len(REQUEST)}, "
            f"wrote {len(REQUEST)}  [tls OpenSSL]") in out
    assert "  sendto fd 5 (tcp 127.0.0.1:40000 -> 127.0.0.1:8443)  count 69, wrote 69  " \
           "[syscall, TLS ciphertext]" in out
    assert "SSL_read fd 5 (tcp 127.0.0.1:40000 -> 127.0.0.1:8443)  count 16384, returned -1 " \
           "(no data)  [tls OpenSSL]" in out
    assert "  write fd 1 (tty /dev/pts/1)  count 5, wrote 5  [syscall]" in out


def test_show_layer_tls_hides_the_syscalls(capture):
    out = run("show", "--layer", "tls", str(capture)).output
    assert "SSL_write" in out and "sendto" not in out and "write fd 1" not in out
    out = run("show", "--layer", "syscall", str(capture)).output
    assert "SSL_" not in out and "sendto" in out and "write fd 1" in out


def test_show_json_carries_the_tls_fields(capture):
    lines = [json.loads(line) for line in run("show", "--json", str(capture)).output.splitlines()]
    events = [line for line in lines if line["type"] in ("write", "read")]
    assert events[1]["layer"] == "tls" and events[1]["syscall"] == "SSL_write"
    assert events[1]["tls"] == {"library": "openssl", "object": LIBSSL, "conn": 0x5599,
                                "fd_source": "in-call", "call_ns": BASE + 999_500,
                                "raw_ret": len(REQUEST)}
    assert events[0]["layer"] == "syscall" and events[0]["tls_call_ns"] == BASE + 999_500
    assert "layer" not in events[5]  # a plain syscall says nothing new


def test_grep_by_layer(capture):
    assert "SSL_write" in run("grep", "--layer", "tls", "Authorization", str(capture)).output
    result = run("grep", "--layer", "syscall", "Authorization", str(capture))
    assert result.exit_code == 1


def test_filter_keeps_one_layer(capture, tmp_path):
    out = tmp_path / "plain.wtrace"
    result = run("filter", "--layer", "tls", "-o", str(out), str(capture))
    assert result.exit_code == 0, result.output
    kept = [r for r in CaptureReader(out.open("rb")) if isinstance(r, IoEvent)]
    assert [e.syscall for e in kept] == ["SSL_write", "SSL_read", "SSL_read"]
    assert kept[0].tls == records()[2].tls


def test_export_raw_of_the_plaintext(capture, tmp_path):
    out = tmp_path / "request.bin"
    result = run("export", "--format", "raw", "--layer", "tls", "-o", str(out), str(capture))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == REQUEST
    back = tmp_path / "reply.bin"
    run("export", "--format", "raw", "--layer", "tls", "--direction", "in", "-o", str(back),
        str(capture))
    assert back.read_bytes() == REPLY
    mixed = tmp_path / "mixed.bin"
    run("export", "--format", "raw", "--fd", "5", "-o", str(mixed), str(capture))
    assert mixed.read_bytes() == CIPHER_OUT + REQUEST  # without --layer: both, in file order


def test_pcapng_of_the_plaintext_dissects_as_http(capture, tmp_path):
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("tshark is not installed (scripts/bootstrap setup installs it)")
        pytest.skip("tshark is not installed")
    out = tmp_path / "tls.pcapng"
    result = run("export", "--format", "pcapng", "--layer", "tls", "-o", str(out), str(capture))
    assert result.exit_code == 0, result.output
    fields = subprocess.run(
        [tshark, "-r", str(out), "-d", "tcp.port==8443,http", "-Y", "http", "-T", "fields",
         "-e", "http.request.method", "-e", "http.request.uri", "-e", "http.response.code"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    assert "GET\t/secret\t" in fields and "\t\t200" in fields


def test_streams_and_messages_of_the_plaintext(capture):
    out = run("streams", "--layer", "tls", str(capture)).output
    assert "http" in out and f"sent {len(REQUEST)} B in 1 events" in out
    out = run("messages", "--layer", "tls", str(capture)).output
    assert "GET /secret HTTP/1.1" in out and "200 OK" in out
    follow = run("follow", "--layer", "tls", "--raw", str(capture))
    assert follow.stdout_bytes == REQUEST


def test_replay_the_plaintext_to_a_file(capture, tmp_path):
    out = tmp_path / "replayed.bin"
    result = run("replay", "--layer", "tls", "--to", f"file:{out}", str(capture))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == REQUEST


def test_scan_and_redact_see_the_plaintext(capture, tmp_path):
    scanned = run("scan", str(capture))
    assert scanned.exit_code == 1 and "SSL_write" in scanned.output
    out = tmp_path / "redacted.wtrace"
    assert run("redact", "-o", str(out), str(capture)).exit_code == 0
    events = [r for r in CaptureReader(out.open("rb")) if isinstance(r, IoEvent)]
    assert b"abcdefghijklmnop" not in events[1].data and b"[REDACTED]" in events[1].data
    assert events[1].layer == "tls" and events[1].tls == records()[2].tls
    assert not events[1].truncated  # its sizes follow the new data


def test_the_python_api_carries_layer_library_and_entry_point(capture):
    opened = wtrec.open(capture)
    events = list(opened.events())
    assert [e.layer for e in events] == ["syscall", "tls", "syscall", "tls", "tls", "syscall"]
    request = events[1]
    assert (request.library, request.entry_point, request.data) == ("openssl", "SSL_write",
                                                                      REQUEST)
    assert request.identity is not None and request.identity.remote == "127.0.0.1:8443"
    assert events[0].tls_call_ns == request.tls.call_ns  # type: ignore[union-attr]
    assert (events[0].library, events[0].entry_point) == (None, None)
    assert [e.syscall for e in opened.events(layer="tls")] == ["SSL_write", "SSL_read",
                                                               "SSL_read"]
    with pytest.raises(wtrec.errors.UsageError):
        list(opened.events(layer="kernel"))


def test_info_names_the_probed_files(capture):
    out = run("info", str(capture)).output
    assert f"tls         {LIBSSL} (openssl): SSL_write SSL_read" in out


def test_parquet_has_the_layer_and_library(capture, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "tls.parquet"
    assert run("export", "--format", "parquet", "-o", str(out), str(capture)).exit_code == 0
    table = pq.read_table(out)
    assert table.column("layer").to_pylist() == ["syscall", "tls", "syscall", "tls", "tls",
                                                  "syscall"]
    assert table.column("tls_library").to_pylist() == [None, "openssl", None, "openssl",
                                                        "openssl", None]
    only = tmp_path / "only.parquet"
    result = run("export", "--format", "parquet", "--layer", "tls", "-o", str(only), str(capture))
    assert result.exit_code == 0, result.output
    assert pq.read_table(only).column("syscall").to_pylist() == ["SSL_write", "SSL_read",
                                                                 "SSL_read"]
