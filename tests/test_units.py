"""Plain-Python parts of recording: kernel record decoding, fd names, /proc, compat."""

import platform
import shutil
import socket
import struct
import subprocess
import time

import pytest
from conftest import DATA
from kernel_bytes import encode_chunk, encode_event, encode_fd_note

from wtrec.capture import compat32, proc_fds
from wtrec.capture.fd_table import FdTable
from wtrec.capture.kernel_records import (
    C_LAYOUTS,
    FLAG_CHUNKED,
    FLAG_FDS_STALE,
    FLAG_INCOMPLETE,
    FLAG_READ_FAULT,
    KIND_CHUNK,
    KIND_EVENT,
    KIND_FD,
    SYSCALL_NAMES,
    BadKernelEvent,
    FdNote,
    KernelDecoder,
    layout,
)
from wtrec.capture.launch import HeldCommand
from wtrec.capture.ordering import ReorderBuffer
from wtrec.capture.probe import (
    COUNT_LOST_EVENTS,
    COUNT_LOST_FD_NOTES,
    COUNT_SENT_EVENTS,
    COUNT_SENT_FD_NOTES,
    bpf_dir,
)
from wtrec.capture.sockaddr import parse_sockaddr, socket_kind
from wtrec.format import CaptureReader
from wtrec.records import FdIdentity, IoEvent


def event(**changes) -> IoEvent:
    fields = dict(ts_ns=5, pid=10, tid=11, uid=0, comm=b"c", fd=3, count=6, data=b"hello\n",
                  syscall="write", ret=6)
    fields.update(changes)
    return IoEvent(**fields)


def test_an_inline_event_decodes():
    raw = encode_event(event(), pad_to=200)  # ring buffer classes pad records
    assert KernelDecoder().decode(raw) == event()


def test_chunks_are_joined_in_offset_order():
    decoder = KernelDecoder()
    # Chunks are named by the call's entry time; the event is dated at its exit.
    big = event(syscall="writev", count=10, ret=10, data=b"0123456789", ts_ns=9)
    assert decoder.decode(encode_chunk(11, 5, 4, b"456789")) is None
    assert decoder.decode(encode_chunk(11, 5, 0, b"0123")) is None
    got = decoder.decode(encode_event(big, flags=FLAG_CHUNKED, captured=10, entry_ns=5))
    assert got == big and decoder.stats.incomplete == 0


def test_a_missing_chunk_keeps_the_prefix_and_counts_incomplete():
    decoder = KernelDecoder()
    decoder.decode(encode_chunk(11, 5, 0, b"0123"))
    decoder.decode(encode_chunk(11, 5, 8, b"89"))
    got = decoder.decode(encode_event(event(count=10, data=b""), flags=FLAG_CHUNKED | FLAG_INCOMPLETE,
                                      captured=10))
    assert got.data == b"0123" and decoder.stats.incomplete == 1


def test_orphan_chunks_of_a_thread_are_dropped_at_its_next_event():
    decoder = KernelDecoder()
    decoder.decode(encode_chunk(11, 1, 0, b"orphan"))
    decoder.decode(encode_chunk(11, 5, 0, b"mine"))
    got = decoder.decode(encode_event(event(data=b""), flags=FLAG_CHUNKED, captured=4))
    assert got.data == b"mine" and decoder.stats.incomplete == 0
    assert decoder._chunks == {}  # the orphan was freed, not kept for ever


def test_a_read_fault_is_counted_not_taken_for_truncation():
    decoder = KernelDecoder()
    got = decoder.decode(encode_event(event(data=b""), flags=FLAG_READ_FAULT))
    assert got.data == b"" and got.count == 6
    assert decoder.stats.read_faults == 1 and decoder.stats.incomplete == 0


def test_the_batch_decoder_gives_what_one_at_a_time_gives():
    """The same kernel records as the tests above, in one batch, as memoryviews of one buffer."""
    big = event(syscall="writev", count=10, ret=10, data=b"0123456789", ts_ns=7)
    opened = note("openat", fd=5, ret=5, blob=b"/tmp/x\0")
    records = [encode_event(event(), pad_to=200), encode_chunk(11, 7, 4, b"456789"),
               encode_fd_note(opened), encode_chunk(11, 7, 0, b"0123"),
               encode_event(big, flags=FLAG_CHUNKED, captured=10),
               encode_event(event(data=b""), flags=FLAG_READ_FAULT)]
    one_by_one = KernelDecoder()
    expected = [item for item in map(one_by_one.decode, records) if item is not None]
    buffer = memoryview(b"".join(records))
    views, offset = [], 0
    for raw in records:
        views.append(buffer[offset:offset + len(raw)])
        offset += len(raw)
    batch = KernelDecoder()
    got = batch.decode_batch(views)
    assert got == expected == [event(), opened, big, event(data=b"")]
    assert all(type(item.data) is bytes for item in got if hasattr(item, "data"))
    assert batch.stats == one_by_one.stats

@pytest.mark.parametrize("raw", [b"", b"\x01\x00", b"\x09\x00\x00\x00" + bytes(100),
                                 encode_event(event())[:-3]])
def test_malformed_kernel_records_are_refused(raw):
    with pytest.raises(BadKernelEvent):
        KernelDecoder().decode(raw)


def sockaddr_in(ip: str, port: int) -> bytes:
    return struct.pack("<H", 2) + struct.pack(">H", port) + socket.inet_aton(ip) + bytes(8)


def note(op, fd=3, fd2=-1, ret=0, a0=0, a1=0, a2=0, blob=b"", pid=10) -> FdNote:
    return FdNote(op=op, ts_ns=1, ret=ret, pid=pid, tid=pid, fd=fd, fd2=fd2, a0=a0, a1=a1, a2=a2,
                  blob=blob)


def c_constant_name(name: str) -> str:
    return {"tcp_connect": "OP_TCP_CONNECT", "exit": "OP_EXIT", "inherit": "OP_FORK"}.get(
        name, "SC_" + name.upper())


def test_the_decoder_layouts_are_the_c_structs_as_compiled(tmp_path):
    """Compiles bpf/wtrec_records.h and compares every field's offset and size,
    each struct's size and every constant with what the decoder uses."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (scripts/bootstrap installs build-essential)"
    lines = []
    for struct_name, fields in C_LAYOUTS.items():
        c_type = f"struct {struct_name}"
        lines.append(f'printf("{struct_name} %zu\\n", sizeof({c_type}));')
        for field, _code in fields:
            lines.append(f'printf("{struct_name}.{field} %zu %zu\\n", offsetof({c_type}, {field}), '
                         f'sizeof((({c_type} *)0)->{field}));')
    constants = {"KIND_EVENT": KIND_EVENT, "KIND_CHUNK": KIND_CHUNK, "KIND_FD": KIND_FD,
                 "FLAG_READ_FAULT": FLAG_READ_FAULT, "FLAG_CHUNKED": FLAG_CHUNKED,
                 "FLAG_INCOMPLETE": FLAG_INCOMPLETE, "FLAG_FDS_STALE": FLAG_FDS_STALE,
                 "COUNT_LOST_EVENTS": COUNT_LOST_EVENTS, "COUNT_LOST_FD_NOTES": COUNT_LOST_FD_NOTES,
                 "COUNT_SENT_EVENTS": COUNT_SENT_EVENTS, "COUNT_SENT_FD_NOTES": COUNT_SENT_FD_NOTES}
    constants.update({c_constant_name(name): number for number, name in SYSCALL_NAMES.items()})
    lines += [f'printf("{name} %d\\n", (int)({name}));' for name in constants]
    source = tmp_path / "layout.c"
    source.write_text("#include <stddef.h>\n#include <stdio.h>\n#include \"wtrec_records.h\"\n"
                      "int main(void)\n{\n" + "\n".join(lines) + "\nreturn 0;\n}\n")
    binary = tmp_path / "layout"
    subprocess.run([compiler, "-Wall", "-Werror", f"-I{bpf_dir()}", "-o", str(binary),
                    str(source)], check=True)
    printed = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    got = dict(line.split(" ", 1) for line in printed.splitlines())
    expected = {}
    for struct_name, fields in C_LAYOUTS.items():
        expected[struct_name] = str(layout(fields).size)
        for index, (field, code) in enumerate(fields):
            offset = struct.calcsize("<" + "".join(c for _f, c in fields[:index]))
            expected[f"{struct_name}.{field}"] = f"{offset} {struct.calcsize('<' + code)}"
    expected.update({name: str(value) for name, value in constants.items()})
    assert got == expected


def test_fd_table_follows_socket_connect_close_and_reuse():
    table = FdTable(resolver=lambda pid, fd: None)
    assert table.identity(10, 3) == FdIdentity("unknown")
    table.apply(note("socket", ret=3, a0=2, a1=1 | 0o4000))  # SOCK_STREAM|SOCK_NONBLOCK
    table.apply(note("connect", ret=-115, blob=sockaddr_in("127.0.0.1", 11111)))
    table.apply(note("tcp_connect", a0=2, a1=52144, a2=11111,
                     blob=socket.inet_aton("127.0.0.1") + bytes(12)
                     + socket.inet_aton("127.0.0.1") + bytes(12)))
    named = table.identity(10, 3)
    assert named.describe() == "tcp 127.0.0.1:52144 -> 127.0.0.1:11111"
    table.apply(note("close"))
    table.apply(note("openat", ret=3, blob=b"/tmp/log.txt\0"))
    assert table.identity(10, 3) == FdIdentity("file", path="/tmp/log.txt")
    table.apply(note("dup2", fd=1, fd2=3))
    assert table.identity(10, 1) == FdIdentity("file", path="/tmp/log.txt")
    table.apply(note("pipe2", fd=5, fd2=6))
    assert table.identity(10, 6) == FdIdentity("pipe")
    table.apply(note("openat", fd=7, blob=b"/dev/pts/4\0"))
    assert table.identity(10, 7).describe() == "tty /dev/pts/4"


def test_fd_table_names_accepted_connections_after_their_listener():
    table = FdTable(resolver=lambda pid, fd: None)
    table.apply(note("socket", fd=4, a0=2, a1=1))
    table.apply(note("bind", fd=4, blob=sockaddr_in("0.0.0.0", 11111)))
    table.apply(note("accept4", fd=5, fd2=4, blob=sockaddr_in("127.0.0.1", 40000)))
    assert table.identity(10, 5).describe() == "tcp 0.0.0.0:11111 -> 127.0.0.1:40000"
    unix = struct.pack("<H", 1) + b"/run/app.sock\0"
    table.apply(note("socket", fd=8, a0=1, a1=1))
    table.apply(note("connect", fd=8, blob=unix))
    assert table.identity(10, 8).describe() == "unix /run/app.sock"


def test_fd_table_asks_proc_once_and_forgets_on_close():
    asked = []
    table = FdTable(resolver=lambda pid, fd: asked.append((pid, fd)) or FdIdentity("pipe"))
    table.prefetch(10, 1)
    table.prefetch(10, 1)
    assert table.identity(10, 1) == FdIdentity("pipe") and asked == [(10, 1)]
    table.apply(note("close", fd=1))
    table.identity(10, 1)
    assert asked == [(10, 1), (10, 1)]


def test_a_listener_older_than_the_capture_is_asked_of_proc_once_for_all_its_accepts():
    """redis-benchmark's 20 connections each made the recorder read /proc for the
    listening socket again (~0.8 ms each): the answer is kept, as identity() keeps it."""
    asked = []
    listener = FdIdentity("tcp", local="127.0.0.1:6379")
    table = FdTable(resolver=lambda pid, fd: asked.append((pid, fd)) or listener)
    for connection in range(20):
        table.apply(note("accept4", fd=10 + connection, fd2=6,
                         blob=sockaddr_in("127.0.0.1", 40000 + connection)))
        assert table.identity(10, 10 + connection).describe() == (
            f"tcp 127.0.0.1:6379 -> 127.0.0.1:{40000 + connection}")
    assert asked == [(10, 6)]
    table.apply(note("close", fd=6))  # a closed listener is asked about afresh
    table.apply(note("accept4", fd=40, fd2=6, blob=sockaddr_in("127.0.0.1", 41000)))
    assert asked == [(10, 6), (10, 6)]


def test_sockaddr_forms():
    v6 = struct.pack("<H", 10) + struct.pack(">H", 443) + bytes(4) + socket.inet_pton(
        socket.AF_INET6, "::1") + bytes(4)
    assert parse_sockaddr(v6) == (10, "[::1]:443")
    assert parse_sockaddr(struct.pack("<H", 1) + b"\0abstract\0") == (1, "@abstract")
    assert parse_sockaddr(b"\x02") == (0, None)
    assert socket_kind(2, 2) == "udp" and socket_kind(1, 1) == "unix" and socket_kind(16, 3) == "socket"


def test_proc_resolves_a_live_socket_and_pipe():
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    import os
    try:
        identity = proc_fds.resolve(os.getpid(), client.fileno())
        assert identity.kind == "tcp"
        assert identity.remote == f"127.0.0.1:{listener.getsockname()[1]}"
        assert identity.local == f"127.0.0.1:{client.getsockname()[1]}"
        read_end, write_end = os.pipe()
        assert proc_fds.resolve(os.getpid(), write_end) == FdIdentity("pipe")
        os.close(read_end)
        os.close(write_end)
        assert proc_fds.resolve(os.getpid(), 987654) is None
    finally:
        for sock in (client, server, listener):
            sock.close()


def test_32bit_elf_detection(tmp_path):
    elf32 = tmp_path / "a32"
    elf32.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(64))
    elf64 = tmp_path / "a64"
    elf64.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))
    assert compat32.is_32bit_elf(elf32) and not compat32.is_32bit_elf(elf64)
    assert not compat32.is_32bit_elf(tmp_path / "missing")
    proc = tmp_path / "proc"
    (proc / "41").mkdir(parents=True)
    (proc / "41" / "exe").symlink_to(elf32)
    (proc / "41" / "comm").write_text("old-app\n")
    (proc / "42").mkdir()
    (proc / "42" / "exe").symlink_to(elf64)
    (proc / "42" / "comm").write_text("new-app\n")
    assert compat32.pids_with_comm(("old-app",), proc) == [41]
    assert compat32.compat_processes([41, 42], proc) == [41]


def test_reorder_buffer_releases_in_time_order_after_the_hold():
    buffer = ReorderBuffer(hold_ns=10)
    for ts in (5, 3, 20, 4):
        buffer.push(event(ts_ns=ts))
    assert [e.ts_ns for e in buffer.release(now_ns=16)] == [3, 4, 5]
    assert [e.ts_ns for e in buffer.drain()] == [20]


def test_a_format_1_0_capture_still_reads():
    with open(DATA / "v1.0-client.wtrace", "rb") as stream:
        reader = CaptureReader(stream)
        records = list(reader)
    assert reader.version == (1, 0) and not reader.truncated
    events = [r for r in records if isinstance(r, IoEvent)]
    assert len(events) == 9
    assert all(e.syscall == "write" and e.ret is None and e.seq is None for e in events)
    assert events[1].data == b"GET /hello HTTP/1.1\n"


def _syscall_and_io(pid: int) -> tuple[str, str]:
    with open(f"/proc/{pid}/syscall") as f:
        number = f.read().split()[0]
    with open(f"/proc/{pid}/io") as f:
        counts = [line for line in f if line.startswith(("syscr", "syscw"))]
    return number, "".join(counts)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers of x86_64")
def test_the_held_command_makes_no_read_or_write_between_ready_and_release():
    # Its pid is traced from before release: a read or write of the launcher
    # would be recorded as the command's.
    held = HeldCommand(["true"])
    try:
        deadline = time.monotonic() + 10
        while _syscall_and_io(held.pid)[0] != "128":  # rt_sigtimedwait
            assert time.monotonic() < deadline, "the launcher never waited for its signal"
            time.sleep(0.01)
        before = _syscall_and_io(held.pid)[1]
        time.sleep(0.5)  # more than two of its 0.2 s waits: it checks its parent meanwhile
        assert _syscall_and_io(held.pid)[1] == before
        held.release()
        assert held.exit_status() == 0
    finally:
        if held.process.poll() is None:
            held.abandon()
