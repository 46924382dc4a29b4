"""Decodes the raw records the BPF program emits: events, data chunks, fd notes.

Mirrors the structs in bpf/write_tracer.bpf.c; change both together. A large
or vectored capture arrives as chunk records followed by its event record;
`KernelDecoder` puts them back together. Plain Python, tested without root.
"""

import struct
from dataclasses import dataclass

from wtrec.records import IoEvent

KIND_EVENT, KIND_CHUNK, KIND_FD = 1, 2, 3

FLAG_READ_FAULT = 1
FLAG_CHUNKED = 2
FLAG_INCOMPLETE = 4

# u32 kind, u32 flags, u64 ts_ns, u64 count, s64 ret, u32 pid, u32 tid,
# u32 uid, s32 fd, u32 captured, u16 syscall, u16 direction, char comm[16]
EVENT_HEADER = struct.Struct("<IIQQqIIIiIHH16s")
# u32 kind, u32 len, u64 ts_ns, u32 tid, u32 offset
CHUNK_HEADER = struct.Struct("<IIQII")
# u32 kind, u32 op, u64 ts_ns, s64 ret, u32 pid, u32 tid, s32 fd, s32 fd2,
# u32 a0, u32 a1, u32 a2, u32 len, u8 blob[256]
FD_NOTE = struct.Struct("<IIQqIIiiIIII256s")

# wtrec's syscall numbering (the SC_* defines of the BPF program).
SYSCALL_NAMES = {
    1: "write", 2: "writev", 3: "pwrite64", 4: "pwritev", 5: "pwritev2", 6: "sendto",
    7: "sendmsg", 16: "read", 17: "readv", 18: "pread64", 19: "recvfrom", 20: "recvmsg",
    32: "socket", 33: "connect", 34: "bind", 35: "accept", 36: "accept4", 37: "openat",
    38: "open", 39: "close", 40: "pipe", 41: "pipe2", 42: "dup", 43: "dup2", 44: "dup3",
    45: "socketpair", 60: "tcp_connect",
}
SYSCALL_IDS = {name: number for number, name in SYSCALL_NAMES.items()}
WRITE_FAMILY = ("write", "writev", "pwrite64", "pwritev", "pwritev2", "sendto", "sendmsg")
READ_FAMILY = ("read", "readv", "pread64", "recvfrom", "recvmsg")

# Chunks waiting for their event are bounded, so a flood of orphans (their
# event record lost) cannot eat the recorder's memory.
MAX_PENDING_CHUNK_BYTES = 256 << 20


class BadKernelEvent(ValueError):
    """The kernel handed us bytes that do not hold a whole record."""


@dataclass(frozen=True)
class FdNote:
    """What the kernel saw a process do to a file descriptor (see fdtable)."""

    op: str
    ts_ns: int
    ret: int
    pid: int
    tid: int
    fd: int
    fd2: int
    a0: int
    a1: int
    a2: int
    blob: bytes


@dataclass
class DecodeStats:
    """Events whose chunks were dropped: delivered, but with less data."""

    incomplete: int = 0
    orphan_chunks: int = 0


class KernelDecoder:
    """Turns raw records into IoEvent and FdNote objects, joining chunks."""

    def __init__(self):
        self._chunks: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        self._chunk_bytes = 0
        self.stats = DecodeStats()

    def decode(self, raw: bytes) -> IoEvent | FdNote | None:
        """One record in; an event or note out (None for a chunk that waits)."""
        if len(raw) < 4:
            raise BadKernelEvent(f"record of {len(raw)} bytes")
        kind = int.from_bytes(raw[:4], "little")
        if kind == KIND_EVENT:
            return self._event(raw)
        if kind == KIND_CHUNK:
            self._chunk(raw)
            return None
        if kind == KIND_FD:
            return _fd_note(raw)
        raise BadKernelEvent(f"record of unknown kind {kind}")

    def _chunk(self, raw: bytes) -> None:
        if len(raw) < CHUNK_HEADER.size:
            raise BadKernelEvent("chunk shorter than its header")
        _kind, length, ts_ns, tid, offset = CHUNK_HEADER.unpack_from(raw)
        data = raw[CHUNK_HEADER.size:CHUNK_HEADER.size + length]
        if len(data) != length:
            raise BadKernelEvent(f"chunk claims {length} bytes but carries {len(data)}")
        if self._chunk_bytes + length > MAX_PENDING_CHUNK_BYTES:
            self._drop_all_chunks()
        self._chunks.setdefault((tid, ts_ns), []).append((offset, data))
        self._chunk_bytes += length

    def _drop_all_chunks(self) -> None:
        self.stats.orphan_chunks += sum(len(parts) for parts in self._chunks.values())
        self._chunks.clear()
        self._chunk_bytes = 0

    def _take_chunks(self, tid: int, ts_ns: int) -> bytes:
        parts = self._chunks.pop((tid, ts_ns), [])
        self._chunk_bytes -= sum(len(data) for _, data in parts)
        # A thread runs one syscall at a time: older chunks of this thread
        # belong to an event whose record was lost.
        for key in [key for key in self._chunks if key[0] == tid and key[1] < ts_ns]:
            stale = self._chunks.pop(key)
            self.stats.orphan_chunks += len(stale)
            self._chunk_bytes -= sum(len(data) for _, data in stale)
        joined = bytearray()
        for offset, data in sorted(parts, key=lambda part: part[0]):
            if offset != len(joined):
                break  # a gap: keep the contiguous prefix
            joined += data
        return bytes(joined)

    def _event(self, raw: bytes) -> IoEvent:
        if len(raw) < EVENT_HEADER.size:
            raise BadKernelEvent(f"event of {len(raw)} bytes, shorter than its header")
        (_kind, flags, ts_ns, count, ret, pid, tid, uid, fd, captured, syscall, direction,
         comm) = EVENT_HEADER.unpack_from(raw)
        if flags & FLAG_CHUNKED:
            data = self._take_chunks(tid, ts_ns)
            if flags & FLAG_INCOMPLETE or len(data) != captured:
                self.stats.incomplete += 1
        else:
            data = raw[EVENT_HEADER.size:EVENT_HEADER.size + captured]
            if len(data) != captured:
                raise BadKernelEvent(f"event claims {captured} bytes but carries {len(data)}")
        return IoEvent(
            ts_ns=ts_ns, pid=pid, tid=tid, uid=uid, comm=comm.split(b"\0", 1)[0], fd=fd,
            count=count, data=data, syscall=SYSCALL_NAMES.get(syscall, f"syscall{syscall}"),
            ret=ret, direction="in" if direction else "out")


def _fd_note(raw: bytes) -> FdNote:
    if len(raw) < FD_NOTE.size:
        raise BadKernelEvent(f"fd note of {len(raw)} bytes")
    (_kind, op, ts_ns, ret, pid, tid, fd, fd2, a0, a1, a2, length,
     blob) = FD_NOTE.unpack_from(raw)
    return FdNote(op=SYSCALL_NAMES.get(op, f"op{op}"), ts_ns=ts_ns, ret=ret, pid=pid, tid=tid,
                  fd=fd, fd2=fd2, a0=a0, a1=a1, a2=a2, blob=blob[:min(length, len(blob))])


def encode_event(event: IoEvent, flags: int = 0, pad_to: int = 0, captured: int | None = None) -> bytes:
    """The kernel's byte layout for an event; tests use it to feed the decoder."""
    chunked = flags & FLAG_CHUNKED
    head = EVENT_HEADER.pack(
        KIND_EVENT, flags, event.ts_ns, event.count, event.ret or 0, event.pid, event.tid,
        event.uid, event.fd, len(event.data) if captured is None else captured,
        SYSCALL_IDS[event.syscall], 1 if event.direction == "in" else 0,
        event.comm.ljust(16, b"\0"))
    raw = head + (b"" if chunked else event.data)
    return raw.ljust(pad_to, b"\0")


def encode_chunk(tid: int, ts_ns: int, offset: int, data: bytes) -> bytes:
    return CHUNK_HEADER.pack(KIND_CHUNK, len(data), ts_ns, tid, offset) + data


def encode_fd_note(note: FdNote) -> bytes:
    return FD_NOTE.pack(KIND_FD, SYSCALL_IDS[note.op], note.ts_ns, note.ret, note.pid, note.tid,
                        note.fd, note.fd2, note.a0, note.a1, note.a2, len(note.blob),
                        note.blob.ljust(256, b"\0"))
