"""A frame of the common records, decoded and checked in one C pass (msgspec).

The general decoder (codec) unpacks each record into Python lists, then
checks every field in Python (about 0.5 µs a record, most of what `grep`
spent on a file of small events). Nearly every frame a recorder writes
holds only what this module knows: events of the twelve fields of format
1.1 to 1.3, and fd, lost and end records. msgspec decodes such a frame
into typed structs and checks each field's type and range as it goes, in
C, at about a quarter of that cost.

Anything else makes `decode` answer None and the general decoder reads
the frame: another record type (the header, a newer version's), a nil
where an int is usual, fields beyond the known ones (TLS events), a
malformed byte, more records than the frame bound. So what is accepted
here is exactly what the general decoder accepts, and its rules and error
messages stay in one place. msgspec is chosen because it is the
maintained library that validates msgpack against a schema in C; its
decoder takes one message, so the frame's records are counted first and
an array header of that count is put before them.
"""

from __future__ import annotations

import io
import struct
import threading
from typing import Annotated

import msgpack
import msgspec
from msgspec import Meta, Struct
from msgspec.structs import astuple

from wtrec.records import TYPE_END, TYPE_FD, TYPE_LOST, TYPE_READ, TYPE_WRITE, IoEvent

# More records than this in one frame take the general decoder, which
# bounds a frame's msgpack objects (codec.MAX_FRAME_OBJECTS, 2^18); a
# record here is at most 12 objects and a struct.
MAX_RECORDS = (1 << 18) // 16
# Bigger frames take the general decoder, a chunk at a time: this pass
# holds a copy of the content and every record's bytes at once (the
# writer's frames are at most about 1 MiB, so they all come here).
MAX_CONTENT = 4 << 20

# msgpack ints are at most u64, so ge=0 alone bounds the u64 fields.
U64 = Annotated[int, Meta(ge=0)]
U32 = Annotated[int, Meta(ge=0, le=(1 << 32) - 1)]
I32 = Annotated[int, Meta(ge=-(1 << 31), le=(1 << 31) - 1)]
I64 = Annotated[int, Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
NonEmpty = Annotated[str, Meta(min_length=1)]


class WriteRecord(Struct, array_like=True, tag=TYPE_WRITE, forbid_unknown_fields=True,
                  frozen=True, gc=False):
    """docs/FORMAT.md, "2: write event": the fields in IoEvent's order."""

    ts_ns: U64
    pid: U32
    tid: U32
    uid: U32
    comm: bytes
    fd: I32
    count: U64
    data: bytes
    syscall: NonEmpty
    ret: I64
    seq: U64


class ReadRecord(WriteRecord, tag=TYPE_READ, frozen=True):
    """"5: read event": the same fields."""


class FdRecord(Struct, array_like=True, tag=TYPE_FD, forbid_unknown_fields=True, frozen=True,
               gc=False):
    ts_ns: U64
    pid: U32
    fd: I32
    kind: str
    local: str | None
    remote: str | None
    path: str | None


class LostRecord(Struct, array_like=True, tag=TYPE_LOST, forbid_unknown_fields=True,
                 frozen=True, gc=False):
    ts_ns: U64
    count: U64
    source: str


class EndRecord(Struct, array_like=True, tag=TYPE_END, forbid_unknown_fields=True,
                frozen=True, gc=False):
    ts_ns: U64
    events: U64
    bytes: U64
    lost: U64


CommonRecord = WriteRecord | ReadRecord | FdRecord | LostRecord | EndRecord
EVENT_TYPES = (WriteRecord, ReadRecord)

_DECODER = msgspec.msgpack.Decoder(list[CommonRecord])


# Bytes msgspec and msgpack are given at a time. Per-frame buffers of a
# frame's size (a copy for the array header, msgpack's own buffer) were
# mapped and faulted in afresh for each frame whenever malloc's moving mmap
# threshold sat below them: 200,000 page faults, twice the time, for `grep`
# on 271 MB of 4 KiB events, depending on nothing but the heap's history.
FEED_BYTES = 64 << 10


class _Scratch(threading.local):
    """The decoding thread's buffer for a frame behind its array header, kept and reused."""

    def __init__(self) -> None:
        self.buffer = bytearray(5)


_scratch = _Scratch()


def record_bounds(content: bytes, every: int) -> tuple[int, list[int]] | None:
    """How many whole records the content starts with, and the byte offset after each `every`-th.

    None when there are more than MAX_RECORDS, or more than MAX_CONTENT
    bytes. Records are walked over by msgpack, not built, FEED_BYTES at a
    time. Bytes after the last whole record are not counted, and `decode`
    refuses them (msgspec takes exactly one message).
    """
    if len(content) > MAX_CONTENT:
        return None
    unpacker = msgpack.Unpacker(io.BytesIO(content), read_size=FEED_BYTES,
                                max_buffer_size=MAX_CONTENT + 1)
    bounds: list[int] = []
    done = 0
    try:
        while done <= MAX_RECORDS:
            for done_here in range(every):  # noqa: B007 (read after the loop)
                unpacker.skip()
            done += every
            bounds.append(unpacker.tell())
    except msgpack.OutOfData:
        done += done_here
    except Exception:  # anything odd: the general decoder says what
        return None
    if done > MAX_RECORDS:
        return None
    return done, bounds


def decode(content: bytes, count: int) -> list[CommonRecord] | None:
    """The frame's `count` records as structs, every field checked; None if any is not common.

    None too for more than MAX_CONTENT bytes or MAX_RECORDS records.
    """
    if len(content) > MAX_CONTENT or not 0 <= count <= MAX_RECORDS:
        return None
    size = 5 + len(content)
    if len(_scratch.buffer) < size:
        _scratch.buffer = bytearray(size)
    buffer = _scratch.buffer
    buffer[:5] = b"\xdd" + struct.pack(">I", count)
    buffer[5:size] = content
    try:
        with memoryview(buffer) as view, view[:size] as message:
            return _DECODER.decode(message)
    # msgspec raises UnicodeDecodeError itself for a str that is not UTF-8
    # (msgspec issue 714), not a DecodeError.
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None


def io_event(record: WriteRecord) -> IoEvent:
    """The event a checked write or read record holds."""
    r = record
    return IoEvent(r.ts_ns, r.pid, r.tid, r.uid, r.comm, r.fd, r.count, r.data, r.syscall, r.ret,
                   r.seq, "in" if type(r) is ReadRecord else "out")


def as_list(record: CommonRecord) -> list:
    """A checked record as msgpack unpacks it: its type, then its fields."""
    return [record.__struct_config__.tag, *astuple(record)]
