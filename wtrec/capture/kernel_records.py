"""Decodes the raw records the BPF program emits: events, data chunks, fd notes.

The layouts are the structs of bpf/wtrec_records.h, written out field by
field below; a test compiles the header and checks every offset. A large
or vectored capture arrives as chunk records followed by its event record;
`KernelDecoder` puts them back together. Plain Python, tested without root.
"""

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from wtrec.records import IoEvent

KIND_EVENT, KIND_CHUNK, KIND_FD = 1, 2, 3

FLAG_READ_FAULT = 1
FLAG_CHUNKED = 2
FLAG_INCOMPLETE = 4
FLAG_FDS_STALE = 8

# The structs of bpf/wtrec_records.h, field by field: (C field name, struct
# code). tests/test_units.py compiles the header and checks every offset.
EVENT_FIELDS = (
    ("kind", "I"), ("flags", "I"), ("ts_ns", "Q"), ("entry_ns", "Q"), ("count", "Q"), ("ret", "q"),
    ("pid", "I"), ("tid", "I"), ("uid", "I"), ("fd", "i"), ("captured", "I"),
    ("syscall", "H"), ("direction", "H"), ("comm", "16s"))
CHUNK_FIELDS = (("kind", "I"), ("len", "I"), ("ts_ns", "Q"), ("tid", "I"), ("offset", "I"))
FD_NOTE_FIELDS = (
    ("kind", "I"), ("op", "I"), ("ts_ns", "Q"), ("ret", "q"), ("pid", "I"), ("tid", "I"),
    ("fd", "i"), ("fd2", "i"), ("a0", "I"), ("a1", "I"), ("a2", "I"), ("len", "I"),
    ("blob", "256s"))
# C struct name -> its fields, for that test.
C_LAYOUTS = {"wtrec_event_header": EVENT_FIELDS, "wtrec_chunk_header": CHUNK_FIELDS,
             "wtrec_fd_note": FD_NOTE_FIELDS}


def layout(fields: tuple[tuple[str, str], ...]) -> struct.Struct:
    """The little-endian, unpadded struct of a field table (the C structs need no padding)."""
    return struct.Struct("<" + "".join(code for _name, code in fields))


EVENT_HEADER = layout(EVENT_FIELDS)
CHUNK_HEADER = layout(CHUNK_FIELDS)
FD_NOTE = layout(FD_NOTE_FIELDS)
RECORD_KIND = struct.Struct("<I")

# wtrec's syscall numbering (the SC_* defines of the BPF program).
SYSCALL_NAMES = {
    1: "write", 2: "writev", 3: "pwrite64", 4: "pwritev", 5: "pwritev2", 6: "sendto",
    7: "sendmsg", 16: "read", 17: "readv", 18: "pread64", 19: "recvfrom", 20: "recvmsg",
    32: "socket", 33: "connect", 34: "bind", 35: "accept", 36: "accept4", 37: "openat",
    38: "open", 39: "close", 40: "pipe", 41: "pipe2", 42: "dup", 43: "dup2", 44: "dup3",
    45: "socketpair", 46: "clone", 47: "clone3", 48: "fork", 49: "vfork", 60: "tcp_connect",
    61: "exit", 62: "inherit",
}
SYSCALL_IDS = {name: number for number, name in SYSCALL_NAMES.items()}
WRITE_FAMILY = ("write", "writev", "pwrite64", "pwritev", "pwritev2", "sendto", "sendmsg")
READ_FAMILY = ("read", "readv", "pread64", "recvfrom", "recvmsg")

# Chunks waiting for their event are bounded, so a flood of orphans (their
# event record lost) cannot eat the recorder's memory.
MAX_PENDING_CHUNK_BYTES = 64 << 20


_new = object.__new__


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
    """Events delivered with less data than they should hold.

    `incomplete`: a chunk could not be sent or kept (the buffer was full);
    `read_faults`: the process's memory could not be read (a bad pointer,
    or pages not resident), so the event carries less or no data.
    """

    incomplete: int = 0
    read_faults: int = 0
    events: int = 0  # event records decoded
    fd_notes: int = 0


class KernelDecoder:
    """Turns raw records into IoEvent and FdNote objects, joining chunks."""

    def __init__(self):
        self._chunks: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        self._chunk_bytes = 0
        # Decoded events flagged FLAG_FDS_STALE, by id(), held until the batch ends.
        self._stale: dict[int, IoEvent] = {}
        self.stats = DecodeStats()

    def decode_batch(self, raws: Iterable[bytes | memoryview]) -> list[IoEvent | FdNote]:
        """Records in kernel order in; the events and notes they make, in the same order.

        An event flagged FLAG_FDS_STALE (an fd note of its process was lost
        before it) is preceded by an "fds-lost" note for its process.
        """
        decode = self.decode
        items = [item for item in map(decode, raws) if item is not None]
        if self._stale:
            items = self._with_stale_notes(items)
        return items

    def _with_stale_notes(self, items: list[IoEvent | FdNote]) -> list[IoEvent | FdNote]:
        out: list[IoEvent | FdNote] = []
        for item in items:
            if self._stale.get(id(item)) is item:
                out.append(FdNote(op="fds-lost", ts_ns=item.ts_ns, ret=0, pid=item.pid,
                                  tid=item.tid, fd=-1, fd2=-1, a0=0, a1=0, a2=0, blob=b""))
            out.append(item)
        self._stale.clear()
        return out

    def decode(self, raw: bytes | memoryview) -> IoEvent | FdNote | None:
        """One record in; an event or note out (None for a chunk that waits)."""
        if len(raw) < 4:
            raise BadKernelEvent(f"record of {len(raw)} bytes")
        kind = RECORD_KIND.unpack_from(raw)[0]
        if kind == KIND_EVENT:
            return self._event(raw)
        if kind == KIND_CHUNK:
            self._chunk(raw)
            return None
        if kind == KIND_FD:
            self.stats.fd_notes += 1
            return _fd_note(raw)
        raise BadKernelEvent(f"record of unknown kind {kind}")

    def _chunk(self, raw: bytes | memoryview) -> None:
        if len(raw) < CHUNK_HEADER.size:
            raise BadKernelEvent("chunk shorter than its header")
        _kind, length, ts_ns, tid, offset = CHUNK_HEADER.unpack_from(raw)
        data = bytes(raw[CHUNK_HEADER.size:CHUNK_HEADER.size + length])
        if len(data) != length:
            raise BadKernelEvent(f"chunk claims {length} bytes but carries {len(data)}")
        if self._chunk_bytes + length > MAX_PENDING_CHUNK_BYTES:
            self._drop_all_chunks()
        self._chunks.setdefault((tid, ts_ns), []).append((offset, data))
        self._chunk_bytes += length

    def _drop_all_chunks(self) -> None:
        # Their events, when they come, are counted incomplete.
        self._chunks.clear()
        self._chunk_bytes = 0

    def _take_chunks(self, tid: int, ts_ns: int) -> bytes:
        parts = self._chunks.pop((tid, ts_ns), [])
        self._chunk_bytes -= sum(len(data) for _, data in parts)
        # A thread runs one syscall at a time: older chunks of this thread
        # belong to an event whose record was lost (and counted lost).
        for key in [key for key in self._chunks if key[0] == tid and key[1] < ts_ns]:
            stale = self._chunks.pop(key)
            self._chunk_bytes -= sum(len(data) for _, data in stale)
        joined = bytearray()
        for offset, data in sorted(parts, key=lambda part: part[0]):
            if offset != len(joined):
                break  # a gap: keep the contiguous prefix
            joined += data
        return bytes(joined)

    def _event(self, raw: bytes | memoryview) -> IoEvent:
        if len(raw) < EVENT_HEADER.size:
            raise BadKernelEvent(f"event of {len(raw)} bytes, shorter than its header")
        (_kind, flags, ts_ns, entry_ns, count, ret, pid, tid, uid, fd, captured, syscall,
         direction, comm) = EVENT_HEADER.unpack_from(raw)
        self.stats.events += 1
        if flags & FLAG_READ_FAULT:
            self.stats.read_faults += 1
        if flags & FLAG_CHUNKED:
            data = self._take_chunks(tid, entry_ns)
            if flags & FLAG_INCOMPLETE or len(data) != captured:
                self.stats.incomplete += 1
        else:
            data = bytes(raw[EVENT_HEADER.size:EVENT_HEADER.size + captured])
            if len(data) != captured:
                raise BadKernelEvent(f"event claims {captured} bytes but carries {len(data)}")
        # IoEvent's generated __init__ (frozen: one object.__setattr__ per
        # field) cost ~2 us, the largest part of the recorder's per-event time;
        # filling the new object's __dict__ gives the same object for a fifth.
        # test_units compares it with IoEvent(...) field for field.
        event = _new(IoEvent)
        event.__dict__.update(
            ts_ns=ts_ns, pid=pid, tid=tid, uid=uid, comm=comm.split(b"\0", 1)[0], fd=fd,
            count=count, data=data, syscall=SYSCALL_NAMES.get(syscall) or f"syscall{syscall}",
            ret=ret, seq=None, direction="in" if direction else "out")
        if flags & FLAG_FDS_STALE:
            self._stale[id(event)] = event
        return event


def _fd_note(raw: bytes | memoryview) -> FdNote:
    if len(raw) < FD_NOTE.size:
        raise BadKernelEvent(f"fd note of {len(raw)} bytes")
    (_kind, op, ts_ns, ret, pid, tid, fd, fd2, a0, a1, a2, length,
     blob) = FD_NOTE.unpack_from(raw)
    return FdNote(op=SYSCALL_NAMES.get(op, f"op{op}"), ts_ns=ts_ns, ret=ret, pid=pid, tid=tid,
                  fd=fd, fd2=fd2, a0=a0, a1=a1, a2=a2, blob=blob[:min(length, len(blob))])
