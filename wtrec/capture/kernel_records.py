"""Decodes the raw records the BPF program emits: events, data chunks, fd notes.

The layouts are the structs of bpf/wtrec_records.h, written out field by
field below; a test compiles the header and checks every offset. A large
or vectored capture arrives as chunk records followed by its event record;
`KernelDecoder` puts them back together. Plain Python, tested without root.

Two ways in: `decode`/`decode_batch` take one record at a time and give
IoEvent objects; `decode_ring_block` takes a run of the ring buffer's bytes
as the kernel laid them out and gives event rows (wtrec.records.EventRow),
each ending with its arrival number (ROW_SEQ: how many events this decoder
had decoded before it), which the recorder keeps as the event's seq unless
time order moved the event.
A stretch of same-sized event records without flags, the common case under
load, becomes an EventTable (wtrec/wtrace/event_table.py): its fields are
copied out as numpy columns, no Python object made per event, and it goes
to the file that way. Everything else (chunks, fd notes, flagged events)
goes through `decode`, so both ways give the same records; a test feeds
both the same kernel bytes.
"""

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from wtrec.records import TYPE_READ, TYPE_WRITE, IoEvent, event_row
from wtrec.wtrace.event_table import KERNEL_FIELDS, EventTable

KIND_EVENT, KIND_CHUNK, KIND_FD, KIND_TLS = 1, 2, 3, 4

FLAG_READ_FAULT = 1
FLAG_CHUNKED = 2
FLAG_INCOMPLETE = 4
FLAG_FDS_STALE = 8
FLAG_TLS_CIPHER = 16  # a syscall event made inside a TLS library call (record --tls)
# What the decoder puts in IoEvent.tls_call_ns of an event flagged
# FLAG_TLS_CIPHER; the recorder's TLS handling (capture/tls_events.py)
# replaces it by the enclosing call's time or None before anything is written.
TLS_CALL_OPEN = -1

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
TLS_CALL_FDS = 4
TLS_EVENT_FIELDS = (
    ("kind", "I"), ("flags", "I"), ("ts_ns", "Q"), ("call_ns", "Q"), ("conn", "Q"),
    ("requested", "Q"), ("ret", "q"), ("len", "Q"), ("pid", "I"), ("tid", "I"), ("uid", "I"),
    ("captured", "I"), ("syscalls", "I"), ("cipher_bytes", "I"), ("fds", f"{TLS_CALL_FDS}i"),
    ("fd_in", f"{TLS_CALL_FDS}I"), ("fd_out", f"{TLS_CALL_FDS}I"), ("before_read_fd", "i"),
    ("before_write_fd", "i"), ("entry", "I"), ("pad", "I"), ("comm", "16s"))
# C struct name -> its fields, for that test.
C_LAYOUTS = {"wtrec_event_header": EVENT_FIELDS, "wtrec_chunk_header": CHUNK_FIELDS,
             "wtrec_fd_note": FD_NOTE_FIELDS, "wtrec_tls_event": TLS_EVENT_FIELDS}


def layout(fields: tuple[tuple[str, str], ...]) -> struct.Struct:
    """The little-endian, unpadded struct of a field table (the C structs need no padding)."""
    return struct.Struct("<" + "".join(code for _name, code in fields))


EVENT_HEADER = layout(EVENT_FIELDS)
CHUNK_HEADER = layout(CHUNK_FIELDS)
FD_NOTE = layout(FD_NOTE_FIELDS)
TLS_EVENT = layout(TLS_EVENT_FIELDS)
RECORD_KIND = struct.Struct("<I")

# The BPF ring buffer's record header (include/uapi/linux/bpf.h): u32 length
# with two flag bits, u32 page offset; records are 8-byte aligned.
RINGBUF_BUSY_BIT = 1 << 31
RINGBUF_DISCARD_BIT = 1 << 30
RINGBUF_HEADER = 8
RINGBUF_LENGTH = struct.Struct("<I")
RING_EVENT = struct.Struct(EVENT_HEADER.format.replace("<", "<II", 1))  # ring header + event header
# A run of same-sized event records is unpacked this many at most at once,
# growing from RUN_FIRST, so a stream of mixed sizes wastes little. A run
# costs a few microseconds however short, so runs under RUN_MIN records are
# decoded record by record, and after one such, RUN_BACKOFF records are.
RUN_FIRST = 16
RUN_MIN = 8
RUN_MAX = 2048
RUN_BACKOFF = 64
MAX_CACHED_NAMES = 4096
# Runs of records with room for at most this much data become EventTables;
# larger ones are handed as rows: a table keeps each event's whole room, and
# a table joined with a wider one takes its width.
TABLE_MAX_ROOM = 1024

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


@dataclass(slots=True)  # not frozen: its generated __init__ is 3x faster, and it is hot
class TlsKernelEvent:
    """One TLS library call as the kernel saw it (record --tls); see capture/tls_events.py.

    `entry` indexes ENTRY_POINTS (tls_libraries.py) from 1; `ret` is the
    library's return value, `length` the plaintext bytes it moved; `in_call`
    holds (fd, bytes received, bytes sent) per fd of the data syscalls made
    during the call.
    """

    ts_ns: int
    call_ns: int
    conn: int
    requested: int
    ret: int
    length: int
    pid: int
    tid: int
    uid: int
    comm: bytes
    entry: int
    in_call: tuple[tuple[int, int, int], ...]
    before_read_fd: int
    before_write_fd: int
    syscalls: int
    cipher_bytes: int
    read_fault: bool
    data: bytes


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


@dataclass
class DecodedBlock:
    """What a run of kernel bytes held, in kernel order.

    `items` are event rows (tuples), FdNotes and whatever else `decode`
    makes; `times` their ts_ns, item for item; `tables` the runs of plain
    events decoded as columns, each with the number of items that came
    before it; `fd_keys` the (pid, fd) of the events; `used` the bytes
    decoded (a record still being written, or cut by the end of the block,
    waits for the next one).
    """

    items: list = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    tables: list[tuple[int, EventTable]] = field(default_factory=list)
    fd_keys: set[tuple[int, int]] = field(default_factory=set)
    used: int = 0


def _field_offset(name: str) -> int:
    """Where an event header field starts in a ring record (after the ring's own header)."""
    codes = "".join(code for _name, code in EVENT_FIELDS[:[n for n, _c in EVENT_FIELDS].index(name)])
    return RINGBUF_HEADER + struct.calcsize("<" + codes)


# Where each field an EventTable keeps sits in a ring record; for a run, also
# what it is checked with (the ring's length word, the kind, the flags).
RING_FIELD_OFFSETS = {name: _field_offset("ts_ns" if name == "ts" else name)
                      for name in KERNEL_FIELDS}
RUN_FIELD_OFFSETS = {**RING_FIELD_OFFSETS, "length": 0, "kind": _field_offset("kind"),
                     "flags": _field_offset("flags")}


class KernelDecoder:
    """Turns raw records into IoEvent and FdNote objects, joining chunks."""

    def __init__(self, tables: bool = True):
        # tables=False: runs are handed as rows, as everything else is (the
        # row lane, which tests compare the column lane with).
        self._tables = tables
        self._chunks: dict[tuple[int, int], list[tuple[int, bytes]]] = {}
        self._chunk_bytes = 0
        # Decoded events flagged FLAG_FDS_STALE, by id(), held until the batch ends.
        self._stale: dict[int, IoEvent] = {}
        self.stats = DecodeStats()
        self._run_from = RUN_FIRST  # how many records the next run tries at most
        # Raw comm -> comm, syscall id -> name: shared objects, looked up by C loops.
        self._comms: dict[bytes, bytes] = {}
        self._syscalls: dict[int, str] = dict(SYSCALL_NAMES)

    def decode_ring_block(self, block: bytes) -> DecodedBlock:
        """The records of `block`, ring buffer bytes from the consumer position on.

        Stops at a record the kernel is still writing (busy) or that the
        block cuts; `used` says how far it got, where the next read starts.
        """
        out = DecodedBlock()
        end = len(block)
        view = memoryview(block)
        position = 0
        run_from = self._run_from  # kept from block to block: under load, runs stay long
        runs_from = 0  # no run is tried before this position (after a short one)
        length_at = RINGBUF_LENGTH.unpack_from
        ring_event = RING_EVENT.unpack_from
        items, times, fd_keys = out.items, out.times, out.fd_keys
        comms, names = self._comms, self._syscalls
        stats = self.stats
        arrival = stats.events  # the next event's arrival number (its row's ROW_SEQ)
        while position + RINGBUF_HEADER <= end:
            length = length_at(block, position)[0]
            if length & RINGBUF_BUSY_BIT:
                break
            size = length & ~RINGBUF_DISCARD_BIT
            stride = (size + RINGBUF_HEADER + 7) & ~7
            if position + stride > end:
                break
            start = position + RINGBUF_HEADER
            if not length & RINGBUF_DISCARD_BIT:
                if (position >= runs_from and size >= EVENT_HEADER.size
                        and block[start] == KIND_EVENT):
                    if (position + RUN_MIN * stride <= end
                            and length_at(block, position + stride)[0] == length
                            and length_at(block, position + (RUN_MIN - 1) * stride)[0] == length):
                        stats.events = arrival
                        taken = self._event_run(view, position, length, stride, end, out,
                                                run_from)
                        arrival = stats.events
                        if taken:
                            position += taken * stride
                            run_from = min(RUN_MAX, max(RUN_FIRST, taken * 2))
                            continue
                    run_from = RUN_FIRST
                    runs_from = position + RUN_BACKOFF * stride
                if size >= EVENT_HEADER.size and block[start] == KIND_EVENT:
                    # One event record: the common case of a mixed stream, inline.
                    (_length, _page, kind, flags, ts_ns, _entry_ns, count, ret, pid, tid, uid, fd,
                     captured, syscall, direction, comm) = ring_event(block, position)
                    if (kind == KIND_EVENT and not flags and direction < 2
                            and captured <= size - EVENT_HEADER.size):
                        data_at = start + EVENT_HEADER.size
                        name = comms.get(comm)
                        if name is None:
                            name = self._comm(comm)
                        items.append((TYPE_READ if direction else TYPE_WRITE, ts_ns, pid, tid, uid,
                                      name, fd, count, block[data_at:data_at + captured],
                                      names.get(syscall) or f"syscall{syscall}", ret, arrival))
                        times.append(ts_ns)
                        fd_keys.add((pid, fd))
                        arrival += 1
                        position += stride
                        continue
                stats.events = arrival
                self._one(view[start:start + size], out)
                arrival = stats.events
            position += stride
        stats.events = arrival
        self._run_from = run_from
        out.used = position
        if self._stale:
            self._stale.clear()
        return out

    def decode_rows(self, raws: Iterable[bytes | memoryview]) -> DecodedBlock:
        """decode_ring_block for records handed over one by one (the perf buffer)."""
        out = DecodedBlock()
        for raw in raws:
            self._one(raw, out)
            out.used += len(raw)
        if self._stale:
            self._stale.clear()
        return out

    def _one(self, raw: bytes | memoryview, out: DecodedBlock) -> None:
        if len(raw) >= EVENT_HEADER.size and raw[0] == KIND_EVENT and self._plain_event(raw, out):
            return
        item = self.decode(raw)
        if item is None:
            return
        if type(item) is IoEvent:
            if self._stale.pop(id(item), None) is not None:
                out.items.append(_stale_note(item))
                out.times.append(item.ts_ns)
            # Made inside a TLS call (record --tls): kept whole, so the
            # recorder can tie it to its call (a row has no room for that).
            out.items.append(item if item.tls_call_ns is not None
                             else (*event_row(item), self.stats.events - 1))
            out.fd_keys.add((item.pid, item.fd))
        else:
            out.items.append(item)
        out.times.append(item.ts_ns)

    def _comm(self, raw: bytes) -> bytes:
        """A process name from the kernel's 16 bytes; one shared object per name."""
        if len(self._comms) > MAX_CACHED_NAMES:
            self._comms.clear()
        name = self._comms[raw] = raw.split(b"\0", 1)[0]
        return name

    def _plain_event(self, raw: bytes | memoryview, out: DecodedBlock) -> bool:
        """An event record without flags (data inline) straight to a row; False if it is
        anything else (then `decode` takes it, and says what is wrong with it)."""
        (kind, flags, ts_ns, _entry_ns, count, ret, pid, tid, uid, fd, captured, syscall,
         direction, comm) = EVENT_HEADER.unpack_from(raw)
        data = bytes(raw[EVENT_HEADER.size:EVENT_HEADER.size + captured])
        if kind != KIND_EVENT or flags or len(data) != captured or direction not in (0, 1):
            return False
        name = self._comms.get(comm)
        if name is None:
            name = self._comm(comm)
        out.items.append((TYPE_READ if direction else TYPE_WRITE, ts_ns, pid, tid, uid, name, fd,
                          count, data, self._syscalls.get(syscall) or f"syscall{syscall}", ret,
                          self.stats.events))
        self.stats.events += 1
        out.times.append(ts_ns)
        out.fd_keys.add((pid, fd))
        return True

    def _event_run(self, view: memoryview, position: int, length: int, stride: int, end: int,
                   out: DecodedBlock, run_from: int) -> int:
        """Decodes the same-sized, unflagged event records from `position` as a table (rows
        if asked, or if their room is large); returns how many (0: none, or fewer than
        RUN_MIN, or one is malformed: then record by record, which says what is wrong)."""
        count = min((end - position) // stride, run_from)
        table = EventTable.plain_run(
            view[position:position + count * stride], count, stride, RUN_FIELD_OFFSETS, length,
            KIND_EVENT, RINGBUF_HEADER + EVENT_HEADER.size, length - EVENT_HEADER.size,
            self.stats.events, self._syscalls, RUN_MIN)
        if table is None:
            return 0
        names = self._syscalls
        for number in set(table.syscalls()) - names.keys():
            names[number] = f"syscall{number}"
        if self._tables and length - EVENT_HEADER.size <= TABLE_MAX_ROOM:
            out.tables.append((len(out.items), table))
        else:
            out.items += table.rows()
            out.times += table.times.tolist()
        out.fd_keys.update(table.fd_keys())
        self.stats.events += len(table)
        return len(table)

    def decode_batch(self, raws: Iterable[bytes | memoryview]
                     ) -> list[IoEvent | FdNote | TlsKernelEvent]:
        """Records in kernel order in; the events and notes they make, in the same order.

        An event flagged FLAG_FDS_STALE (an fd note of its process was lost
        before it) is preceded by an "fds-lost" note for its process.
        """
        decode = self.decode
        items: list[IoEvent | FdNote | TlsKernelEvent] = [
            item for item in map(decode, raws) if item is not None]
        if self._stale:
            items = self._with_stale_notes(items)
        return items

    def _with_stale_notes(self, items: list[IoEvent | FdNote | TlsKernelEvent]
                          ) -> list[IoEvent | FdNote | TlsKernelEvent]:
        out: list[IoEvent | FdNote | TlsKernelEvent] = []
        for item in items:
            if self._stale.get(id(item)) is item:
                out.append(_stale_note(item))
            out.append(item)
        self._stale.clear()
        return out

    def decode(self, raw: bytes | memoryview) -> IoEvent | FdNote | TlsKernelEvent | None:
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
        if kind == KIND_TLS:
            self.stats.events += 1
            event = _tls_event(raw)
            if event.read_fault:
                self.stats.read_faults += 1
            return event
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
        if flags & FLAG_TLS_CIPHER:
            event.__dict__["tls_call_ns"] = TLS_CALL_OPEN
        return event


def _stale_note(event: IoEvent) -> FdNote:
    """The note that goes before an event flagged FLAG_FDS_STALE."""
    return FdNote(op="fds-lost", ts_ns=event.ts_ns, ret=0, pid=event.pid, tid=event.tid, fd=-1,
                  fd2=-1, a0=0, a1=0, a2=0, blob=b"")


def _fd_note(raw: bytes | memoryview) -> FdNote:
    if len(raw) < FD_NOTE.size:
        raise BadKernelEvent(f"fd note of {len(raw)} bytes")
    (_kind, op, ts_ns, ret, pid, tid, fd, fd2, a0, a1, a2, length,
     blob) = FD_NOTE.unpack_from(raw)
    return FdNote(op=SYSCALL_NAMES.get(op, f"op{op}"), ts_ns=ts_ns, ret=ret, pid=pid, tid=tid,
                  fd=fd, fd2=fd2, a0=a0, a1=a1, a2=a2, blob=blob[:min(length, len(blob))])


def _tls_event(raw: bytes | memoryview) -> TlsKernelEvent:
    if len(raw) < TLS_EVENT.size:
        raise BadKernelEvent(f"TLS event of {len(raw)} bytes, shorter than its header")
    values = TLS_EVENT.unpack_from(raw)
    (_kind, flags, ts_ns, call_ns, conn, requested, ret, length, pid, tid, uid, captured,
     syscalls, cipher_bytes) = values[:14]
    fds = values[14:14 + TLS_CALL_FDS]
    fd_in = values[14 + TLS_CALL_FDS:14 + 2 * TLS_CALL_FDS]
    fd_out = values[14 + 2 * TLS_CALL_FDS:14 + 3 * TLS_CALL_FDS]
    before_read_fd, before_write_fd, entry, _pad, comm = values[14 + 3 * TLS_CALL_FDS:]
    data = bytes(raw[TLS_EVENT.size:TLS_EVENT.size + captured])
    if len(data) != captured:
        raise BadKernelEvent(f"TLS event claims {captured} bytes but carries {len(data)}")
    return TlsKernelEvent(
        ts_ns=ts_ns, call_ns=call_ns, conn=conn, requested=requested, ret=ret, length=length,
        pid=pid, tid=tid, uid=uid, comm=comm.split(b"\0", 1)[0], entry=entry,
        in_call=tuple((fd, received, sent) for fd, received, sent
                      in zip(fds, fd_in, fd_out, strict=True) if fd >= 0),
        before_read_fd=before_read_fd, before_write_fd=before_write_fd, syscalls=syscalls,
        cipher_bytes=cipher_bytes, read_fault=bool(flags & FLAG_READ_FAULT), data=data)
