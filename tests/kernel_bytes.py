"""Builds kernel records byte for byte, to feed the decoder in tests.

Test-only: the product never encodes kernel records. The layouts come from
the decoder's field tables, which test_units checks against the C header.
"""

import struct

from wtrec.capture.kernel_records import (
    CHUNK_HEADER,
    EVENT_HEADER,
    FD_NOTE,
    FLAG_CHUNKED,
    KIND_CHUNK,
    KIND_EVENT,
    KIND_FD,
    KIND_TLS,
    RINGBUF_BUSY_BIT,
    RINGBUF_DISCARD_BIT,
    SYSCALL_IDS,
    TLS_CALL_FDS,
    TLS_EVENT,
    FdNote,
)
from wtrec.records import IoEvent


def encode_event(event: IoEvent, flags: int = 0, pad_to: int = 0,
                 captured: int | None = None, entry_ns: int | None = None) -> bytes:
    """An event record; with FLAG_CHUNKED the data is left out (it comes in chunks,
    named by the event's entry time, by default its ts_ns)."""
    chunked = flags & FLAG_CHUNKED
    head = EVENT_HEADER.pack(
        KIND_EVENT, flags, event.ts_ns, event.ts_ns if entry_ns is None else entry_ns,
        event.count, event.ret or 0, event.pid, event.tid,
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


def encode_tls_event(*, entry: int, ts_ns: int, call_ns: int, pid: int, tid: int,
                     conn: int = 0x5555, requested: int = 0, ret: int = 0, length: int = 0,
                     data: bytes = b"", in_call: tuple[tuple[int, int, int], ...] = (),
                     before: tuple[int, int] = (-1, -1), comm: bytes = b"c", flags: int = 0,
                     syscalls: int = 0, cipher_bytes: int = 0) -> bytes:
    """A TLS record as the BPF program sends it (in_call: (fd, received, sent) per fd)."""
    slots = list(in_call) + [(-1, 0, 0)] * (TLS_CALL_FDS - len(in_call))
    return TLS_EVENT.pack(
        KIND_TLS, flags, ts_ns, call_ns, conn, requested, ret, length, pid, tid, 0, len(data),
        syscalls, cipher_bytes, *(fd for fd, _r, _s in slots), *(r for _f, r, _s in slots),
        *(s for _f, _r, s in slots), before[0], before[1], entry, 0,
        comm.ljust(16, b"\0")) + data
def ring_block(raws: list[bytes], *, discarded: frozenset[int] = frozenset(),
               busy: frozenset[int] = frozenset()) -> bytes:
    """Records as the BPF ring buffer lays them out: an 8-byte header (length with the busy
    and discard bits, page offset) before each, each padded to 8 bytes."""
    out = bytearray()
    for number, raw in enumerate(raws):
        length = len(raw) | (RINGBUF_DISCARD_BIT if number in discarded else 0) | (
            RINGBUF_BUSY_BIT if number in busy else 0)
        out += struct.pack("<II", length, 0) + raw + bytes(-len(raw) % 8)
    return bytes(out)


class StandInProbe:
    """What a Recording asks of its probe, with nothing happening: tests override the parts
    they are about (the ring's bytes, losses, the stop)."""

    def __init__(self, block: bytes = b"", *, step: int = 1 << 20, events: int = 0):
        from wtrec.capture.probe import ProbeConfig

        self.config = ProbeConfig()
        self.block = block
        self.step = step
        self.events = events
        self.position = 0

    def peek_ring(self, size):
        return self.block[self.position:self.position + min(size, self.step)]

    def release_ring(self, used):
        self.position += used

    def stop_producing(self):
        pass

    def skip_unread(self):
        pass

    def lost(self):
        from wtrec.capture.probe import RecordCounts

        return RecordCounts()

    def handed_over(self):
        from wtrec.capture.probe import RecordCounts

        return RecordCounts(events=self.events)

    def unfollowed(self):
        return 0
