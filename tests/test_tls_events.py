"""record --tls without a kernel: the TLS record, its decoding, the recorder's TLS half, format 1.4."""

import io
import re
import shutil
import subprocess

import pytest
from kernel_bytes import encode_event, encode_fd_note, encode_tls_event
from test_recorder import FakeProbe

from wtrec.capture.fd_table import FdTable
from wtrec.capture.kernel_records import (
    FLAG_READ_FAULT,
    FLAG_TLS_CIPHER,
    KIND_TLS,
    TLS_CALL_FDS,
    TLS_CALL_OPEN,
    BadKernelEvent,
    FdNote,
    KernelDecoder,
    TlsKernelEvent,
)
from wtrec.capture.probe import ProbeConfig, bpf_dir, bpf_program_text, bpf_source_path
from wtrec.capture.tls_events import TlsEvents, no_call_note, tls_targets_for_header
from wtrec.capture.tls_libraries import ENTRY_POINTS, AttachTarget
from wtrec.errors import FormatError
from wtrec.format import CaptureReader, CaptureWriter
from wtrec.record import Recording, StopRule, boot_ns, recording_header
from wtrec.records import FdIdentity, FdInfo, Filters, IoEvent, TlsInfo
from wtrec.wtrace.codec import encode_record

LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
TARGETS = [AttachTarget(LIBSSL, entry.symbol, "openssl", 0) for entry in ENTRY_POINTS[:4]]
SSL_WRITE_EX, SSL_READ = 2, 3


def socket_or_file(_pid: int, fd: int) -> FdIdentity:
    return FdIdentity("tcp", "127.0.0.1:5000", "127.0.0.1:443") if fd == 5 else FdIdentity("file")


def test_the_bpf_programs_agree_with_the_entry_point_table():
    """One enter/leave pair per ENTRY_POINTS row, id = index + 1, the right return style."""
    source = bpf_source_path().read_text()
    enters = re.findall(r"int tls_enter_(\w+)\(struct pt_regs \*ctx\) \{ return tls_enter\(ctx, "
                        r"(\d+), ([^;]+)\); \}", source)
    leaves = re.findall(r"int tls_leave_(\w+)\(struct pt_regs \*ctx\) \{ return tls_leave\(ctx, "
                        r"(\d+), (\w+)\); \}", source)
    assert len(enters) == len(leaves) == len(ENTRY_POINTS)
    for index, entry in enumerate(ENTRY_POINTS):
        name, number, size_out = enters[index]
        assert (name, int(number)) == (entry.symbol.lower(), index + 1)
        assert (size_out == "PT_REGS_PARM4(ctx)") == (entry.length == "out_param")
        name, number, style = leaves[index]
        assert (name, int(number)) == (entry.symbol.lower(), index + 1)
        expected = ("RET_INT_EX" if entry.length == "out_param" else
                    "RET_SSIZE" if entry.returns == "ssize" else "RET_INT")
        assert style == expected


def test_tls_constants_match_the_header(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (scripts/bootstrap installs build-essential)"
    source = tmp_path / "c.c"
    source.write_text('#include <stdio.h>\n#include "wtrec_records.h"\nint main(void) { '
                      'printf("%d %d %d\\n", KIND_TLS, FLAG_TLS_CIPHER, TLS_CALL_FDS); }\n')
    subprocess.run([compiler, f"-I{bpf_dir()}", "-o", str(tmp_path / "c"), str(source)],
                   check=True)
    printed = subprocess.run([str(tmp_path / "c")], capture_output=True, text=True).stdout
    assert printed.split() == [str(KIND_TLS), str(FLAG_TLS_CIPHER), str(TLS_CALL_FDS)]


def test_print_bpf_names_tls_only_with_tls():
    assert "-DWTREC_TLS=1" in ProbeConfig(tls=True).cflags()
    assert "-DWTREC_TLS=1" not in ProbeConfig().cflags()
    assert "#define WTREC_TLS 1" in bpf_program_text(ProbeConfig(tls=True))


def test_a_tls_record_decodes():
    decoder = KernelDecoder()
    raw = encode_tls_event(entry=SSL_WRITE_EX, ts_ns=50, call_ns=40, pid=7, tid=8, conn=0xabc,
                           requested=83, ret=1, length=83, data=b"GET / HTTP/1.1\r\n",
                           in_call=((5, 0, 105), (9, 174, 0)), before=(4, 3), syscalls=2,
                           cipher_bytes=279, comm=b"curl")
    event = decoder.decode(raw + b"\0" * 40)  # ring buffer classes pad records
    assert event == TlsKernelEvent(
        ts_ns=50, call_ns=40, conn=0xabc, requested=83, ret=1, length=83, pid=7, tid=8, uid=0,
        comm=b"curl", entry=SSL_WRITE_EX, in_call=((5, 0, 105), (9, 174, 0)),
        before_read_fd=4, before_write_fd=3, syscalls=2, cipher_bytes=279, read_fault=False,
        data=b"GET / HTTP/1.1\r\n")
    assert decoder.stats.events == 1  # counted like any event: loss accounting stays exact
    faulted = decoder.decode(encode_tls_event(entry=1, ts_ns=1, call_ns=1, pid=1, tid=1,
                                              flags=FLAG_READ_FAULT))
    assert isinstance(faulted, TlsKernelEvent) and faulted.read_fault
    assert decoder.stats.read_faults == 1


def test_damaged_tls_records_are_refused():
    raw = encode_tls_event(entry=1, ts_ns=1, call_ns=1, pid=1, tid=1, data=b"abc")
    with pytest.raises(BadKernelEvent, match="shorter than its header"):
        KernelDecoder().decode(raw[:100])
    with pytest.raises(BadKernelEvent, match="claims 3 bytes"):
        KernelDecoder().decode(raw[:-1])


def flagged(ts_ns: int, tid: int = 8, fd: int = 5, pid: int = 7) -> bytes:
    return encode_event(IoEvent(ts_ns=ts_ns, pid=pid, tid=tid, uid=0, comm=b"curl", fd=fd,
                                count=105, data=b"\x17\x03\x03", ret=105, syscall="sendto"),
                        flags=FLAG_TLS_CIPHER)


def test_syscalls_inside_a_call_are_tied_to_it():
    decoder = KernelDecoder()
    items = decoder.decode_batch([
        flagged(10),  # before the call: its call never returned (lost): tied to nothing
        flagged(45), flagged(46, fd=20),  # inside the call, on the socket and on a file
        flagged(47, tid=9),  # another thread, still inside its own call
        encode_tls_event(entry=SSL_WRITE_EX, ts_ns=50, call_ns=40, pid=7, tid=8, ret=1,
                         length=3, data=b"GET", in_call=((5, 0, 105), (20, 174, 0))),
    ])
    assert items[0].tls_call_ns == TLS_CALL_OPEN  # what the decoder leaves for the recorder
    tls = TlsEvents(TARGETS, socket_or_file)
    tls.link(items)
    assert [item.tls_call_ns for item in items[:4]] == [None, 40, 40, None]
    tls.link(decoder.decode_batch([encode_tls_event(entry=SSL_READ, ts_ns=60, call_ns=30,
                                                    pid=7, tid=9)]))
    assert items[3].tls_call_ns == 30
    plain = decoder.decode(encode_event(IoEvent(ts_ns=1, pid=7, tid=8, uid=0, comm=b"c", fd=1,
                                                count=1, data=b"x", ret=1)))
    assert isinstance(plain, IoEvent) and plain.tls_call_ns is None


def test_a_call_becomes_an_event_of_the_tls_layer():
    tls = TlsEvents(TARGETS, socket_or_file)
    call = KernelDecoder().decode(encode_tls_event(
        entry=SSL_WRITE_EX, ts_ns=50, call_ns=40, pid=7, tid=8, conn=0xabc, requested=83, ret=1,
        length=83, data=b"GET", in_call=((20, 174, 0), (5, 0, 105))))
    assert isinstance(call, TlsKernelEvent)
    event = tls.event(call)
    assert event == IoEvent(
        ts_ns=50, pid=7, tid=8, uid=0, comm=b"c", fd=5, count=83, data=b"GET",
        syscall="SSL_write_ex", ret=83, direction="out", layer="tls",
        tls=TlsInfo(library="openssl", object=LIBSSL, conn=0xabc, fd_source="in-call",
                    call_ns=40, raw_ret=1))
    assert event.truncated  # 3 of 83 bytes: the expected size of a TLS event is what moved
    assert tls.calls == 1


def test_a_failed_call_is_kept_without_data():
    tls = TlsEvents(TARGETS, socket_or_file)
    failed = tls.event(TlsKernelEvent(
        ts_ns=5, call_ns=4, conn=1, requested=16384, ret=-1, length=0, pid=7, tid=7, uid=0,
        comm=b"c", entry=SSL_READ, in_call=((5, 510, 0),), before_read_fd=-1,
        before_write_fd=-1, syscalls=4, cipher_bytes=510, read_fault=False, data=b""))
    assert (failed.ret, failed.data, failed.direction, failed.fd) == (-1, b"", "in", 5)
    assert failed.tls is not None and failed.tls.raw_ret == -1
    assert not failed.truncated and failed.failed


def test_the_connection_fd_is_remembered_and_forgotten_on_close():
    tls = TlsEvents(TARGETS, socket_or_file)

    def call(in_call: tuple = ()) -> TlsKernelEvent:
        return TlsKernelEvent(ts_ns=5, call_ns=4, conn=0xabc, requested=10, ret=10, length=10,
                              pid=7, tid=7, uid=0, comm=b"c", entry=1, in_call=in_call,
                              before_read_fd=-1, before_write_fd=-1, syscalls=0,
                              cipher_bytes=0, read_fault=False, data=b"")

    assert tls.event(call(((5, 0, 30),))).fd == 5
    buffered = tls.event(call())  # nothing sent in this call (the library buffered it)
    assert (buffered.fd, buffered.tls and buffered.tls.fd_source) == (5, "connection")
    tls.note(FdNote(op="close", ts_ns=6, ret=0, pid=7, tid=7, fd=5, fd2=-1, a0=0, a1=0, a2=0,
                    blob=b""))
    assert tls.event(call()).fd == -1


def test_an_unknown_entry_id_is_kept():
    tls = TlsEvents(TARGETS, socket_or_file)
    event = tls.event(TlsKernelEvent(ts_ns=5, call_ns=4, conn=1, requested=1, ret=1, length=1,
                                     pid=7, tid=7, uid=0, comm=b"c", entry=99, in_call=(),
                                     before_read_fd=-1, before_write_fd=-1, syscalls=0,
                                     cipher_bytes=0, read_fault=False, data=b"x"))
    assert event.syscall == "tls-entry-99" and event.layer == "tls"


def test_the_object_is_named_only_when_one_file_has_the_entry_point():
    targets = [*TARGETS, AttachTarget("/lib/libgnutls-openssl.so.27", "SSL_write", "openssl", 0)]
    tls = TlsEvents(targets, socket_or_file)
    event = tls.event(TlsKernelEvent(ts_ns=5, call_ns=4, conn=1, requested=1, ret=1, length=1,
                                     pid=7, tid=7, uid=0, comm=b"c", entry=1, in_call=(),
                                     before_read_fd=-1, before_write_fd=-1, syscalls=0,
                                     cipher_bytes=0, read_fault=False, data=b"x"))
    assert event.tls is not None and event.tls.object is None
    assert tls_targets_for_header(targets) == (
        (LIBSSL, "openssl", ("SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex")),
        ("/lib/libgnutls-openssl.so.27", "openssl", ("SSL_write",)))
    assert no_call_note(targets) == ("--tls: no TLS library call was recorded (probed OpenSSL "
                                     "in 2 files); the capture holds syscalls only")


def tls_header():
    config = ProbeConfig(tls=True)
    return recording_header(config, ("curl",), TARGETS)


def test_format_1_4_round_trip():
    header = tls_header()
    assert header.filters.tls and header.filters.tls_targets[0][0] == LIBSSL
    tls_event = IoEvent(ts_ns=50, pid=7, tid=8, uid=0, comm=b"curl", fd=5, count=83, data=b"GET",
                        syscall="SSL_write_ex", ret=83, seq=1, direction="out", layer="tls",
                        tls=TlsInfo("openssl", LIBSSL, 0xabc, "in-call", 40, 1))
    cipher = IoEvent(ts_ns=45, pid=7, tid=8, uid=0, comm=b"curl", fd=5, count=105,
                     data=b"\x17\x03", syscall="sendto", ret=105, seq=0, tls_call_ns=40)
    plain = IoEvent(ts_ns=60, pid=7, tid=8, uid=0, comm=b"curl", fd=1, count=1, data=b"x",
                    syscall="write", ret=1, seq=2)
    assert len(encode_record(plain)) == 12  # events without TLS fields stay as in 1.3
    assert len(encode_record(cipher)) == 15 and len(encode_record(tls_event)) == 14
    out = io.BytesIO()
    writer = CaptureWriter(out, header)
    for record in (cipher, tls_event, plain):
        writer.write(record)
    writer.close(end_of(3))
    reader = CaptureReader(io.BytesIO(out.getvalue()))
    records = list(reader)
    assert reader.header == header
    assert records[1:4] == [cipher, tls_event, plain]


def end_of(events: int):
    from wtrec.records import End
    return End(ts_ns=99, events=events, bytes=0, lost=0)


def test_a_header_without_tls_is_unchanged():
    fields = encode_record(recording_header(ProbeConfig(), ()))
    assert "tls" not in fields[10] and "tls_targets" not in fields[10]


@pytest.mark.parametrize("bad", [
    ["tls", "not a map"],
    ["tls", {"library": 1, "object": None, "conn": 1, "fd_source": "x", "call_ns": 1,
             "raw_ret": 0}],
    ["tls", {"library": "openssl", "object": None, "conn": -1, "fd_source": "x",
             "call_ns": 1, "raw_ret": 0}],
    ["tls", {"library": "openssl", "object": None, "conn": 1, "fd_source": "x",
             "call_ns": 1}],
    ["syscall", None, "not an int"],
    [3, None],
])
def test_bad_tls_fields_are_format_errors(bad):
    import msgpack
    import zstandard

    from wtrec.format import encode_preamble
    event = encode_record(IoEvent(ts_ns=1, pid=1, tid=1, uid=0, comm=b"c", fd=1, count=1,
                                  data=b"x", ret=1, seq=0)) + bad
    frames = [zstandard.ZstdCompressor(write_content_size=True).compress(
        msgpack.packb(record, use_bin_type=True))
        for record in (encode_record(tls_header()), event)]
    reader = CaptureReader(io.BytesIO(encode_preamble() + b"".join(frames)))
    with pytest.raises(FormatError):
        list(reader)


@pytest.mark.parametrize("targets", [[[1, "openssl", []]], [["p", "openssl"]], "x",
                                     [["p", "openssl", [2]]]])
def test_bad_tls_targets_are_format_errors(targets):
    import msgpack
    import zstandard

    from wtrec.format import encode_preamble
    header = encode_record(tls_header())
    header[10]["tls_targets"] = targets
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(
        msgpack.packb(header, use_bin_type=True))
    with pytest.raises(FormatError):
        list(CaptureReader(io.BytesIO(encode_preamble() + frame)))


def test_the_recorder_writes_tls_events_with_their_connection():
    now = boot_ns() - 10**9  # old enough for the reorder buffer to release
    pid = 700
    connect = encode_fd_note(FdNote(op="tcp_connect", ts_ns=now, ret=0, pid=pid, tid=pid, fd=5,
                                    fd2=-1, a0=2, a1=40000, a2=443,
                                    blob=bytes([127, 0, 0, 1]) + bytes(12)
                                    + bytes([127, 0, 0, 1]) + bytes(12)))
    batch = [
        connect,
        flagged(now + 5, tid=pid, pid=pid),
        encode_tls_event(entry=SSL_WRITE_EX, ts_ns=now + 6, call_ns=now + 4, pid=pid, tid=pid,
                         requested=3, ret=1, length=3, data=b"GET", in_call=((5, 0, 105),)),
        encode_tls_event(entry=SSL_READ, ts_ns=now + 8, call_ns=now + 7, pid=pid, tid=pid,
                         requested=100, ret=-1, in_call=((5, 510, 0),)),
    ]
    probe = FakeProbe([batch], unread=2)  # the two TLS records count as sent events
    out = io.BytesIO()
    writer = CaptureWriter(out, tls_header())
    recording = Recording(probe, writer, StopRule(), fds=FdTable(resolver=lambda _p, _f: None),
                          sleep=lambda _s: None, tls_targets=TARGETS)
    recording.stop()
    recording.run()
    records = list(CaptureReader(io.BytesIO(out.getvalue())))
    infos = [r for r in records if isinstance(r, FdInfo)]
    events = [r for r in records if isinstance(r, IoEvent)]
    assert [i.identity.describe() for i in infos] == ["tcp 127.0.0.1:40000 -> 127.0.0.1:443"]
    assert [(e.syscall, e.fd, e.layer, e.tls_call_ns, e.data) for e in events] == [
        ("sendto", 5, "syscall", now + 4, b"\x17\x03\x03"),
        ("SSL_write_ex", 5, "tls", None, b"GET"),
        ("SSL_read", 5, "tls", None, b""),
    ]
    assert [e.seq for e in events] == [0, 1, 2]
    assert recording.stats.lost == 0 and recording.stats.events == 3
    assert recording.tls is not None and recording.tls.calls == 2


def test_filters_keep_tls_defaults():
    assert Filters().tls is False and Filters().tls_targets == ()
