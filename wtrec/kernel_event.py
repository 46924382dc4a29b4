"""Decodes the raw event bytes the BPF program emits into WriteEvent records.

Mirrors `struct wtrec_event_header` in bpf/write_tracer.bpf.c; change both
together. Plain Python, so it is tested without root.
"""

import struct

from wtrec.records import WriteEvent

# u64 ts_ns, u64 count, u32 pid, u32 tid, u32 uid, s32 fd, u32 captured,
# u32 flags, char comm[16]
EVENT_HEADER = struct.Struct("<QQIIIiII16s")
FLAG_READ_FAULT = 1


class BadKernelEvent(ValueError):
    """The kernel handed us bytes that do not hold a whole event."""


def decode_event(raw: bytes) -> WriteEvent:
    """One WriteEvent from one ring/perf buffer record."""
    if len(raw) < EVENT_HEADER.size:
        raise BadKernelEvent(f"event of {len(raw)} bytes, shorter than its header")
    ts_ns, count, pid, tid, uid, fd, captured, _flags, comm = EVENT_HEADER.unpack_from(raw)
    end = EVENT_HEADER.size + captured
    if end > len(raw):
        raise BadKernelEvent(f"event claims {captured} bytes but carries {len(raw) - EVENT_HEADER.size}")
    return WriteEvent(
        ts_ns=ts_ns, pid=pid, tid=tid, uid=uid, comm=comm.split(b"\0", 1)[0], fd=fd,
        count=count, data=raw[EVENT_HEADER.size:end])


def encode_event(event: WriteEvent, flags: int = 0, pad_to: int = 0) -> bytes:
    """The kernel's byte layout for an event; used by tests to feed the decoder."""
    head = EVENT_HEADER.pack(event.ts_ns, event.count, event.pid, event.tid, event.uid,
                             event.fd, len(event.data), flags, event.comm.ljust(16, b"\0"))
    raw = head + event.data
    return raw.ljust(pad_to, b"\0")
