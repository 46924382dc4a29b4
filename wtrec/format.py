"""The .wtrace file format, version 1: the only module that knows zstd and msgpack.

A capture is a zstd skippable frame (the preamble: magic tag and version)
followed by ordinary zstd frames, each holding whole msgpack records.
docs/FORMAT.md is the byte-level specification; keep the two in step.

The reader treats its input as hostile: every size is checked against a
bound before anything is allocated, every field is type-checked, and the
only exceptions that leave it are FormatError and NewerFormatError.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

import msgpack
import zstandard

from wtrec.errors import FormatError, NewerFormatError
from wtrec.format_index import FrameEntry, encode_index_frame, encode_seek_table
from wtrec.records import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    TYPE_END,
    TYPE_FD,
    TYPE_HEADER,
    TYPE_LOST,
    TYPE_READ,
    TYPE_WRITE,
    Derivation,
    End,
    FdIdentity,
    FdInfo,
    Filters,
    Header,
    IoEvent,
    Lost,
    Record,
)
from wtrec.stats import CaptureStats, StatsAccumulator

PREAMBLE_MAGIC = 0x184D2A5E  # a zstd skippable-frame magic (0x184D2A5?)
PREAMBLE_TAG = b"WTRACE"
ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE_MASK = 0xFFFFFFF0
SKIPPABLE_BASE = 0x184D2A50

# The writer closes a frame at whichever of these comes first.
FRAME_MAX_RECORDS = 1024
FRAME_MAX_BYTES = 1 << 20
FRAME_MAX_AGE_NS = 1_000_000_000

# Bounds the reader enforces before allocating anything.
MAX_FRAME_CONTENT = 64 << 20  # decompressed bytes in one zstd frame
MAX_SKIPPABLE = 64 << 20  # bytes in one skippable frame
MAX_BLOCK = 128 << 10  # zstd's Block_Maximum_Size
MAX_RECORD_FIELDS = 4096  # msgpack array/map lengths
MAX_PROVENANCE_DEPTH = 8  # a derived file's inputs' inputs' ... headers

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def encode_preamble(major: int = FORMAT_MAJOR, minor: int = FORMAT_MINOR) -> bytes:
    """The 16-byte skippable frame every capture starts with."""
    payload = PREAMBLE_TAG + bytes([major, minor])
    return struct.pack("<II", PREAMBLE_MAGIC, len(payload)) + payload


def encode_record(record: Record) -> list:
    """The msgpack-ready array for one record (see docs/FORMAT.md)."""
    if isinstance(record, IoEvent):
        kind = TYPE_READ if record.direction == "in" else TYPE_WRITE
        return [kind, record.ts_ns, record.pid, record.tid, record.uid,
                record.comm, record.fd, record.count, record.data, record.syscall,
                record.ret, record.seq]
    if isinstance(record, FdInfo):
        ident = record.identity
        return [TYPE_FD, record.ts_ns, record.pid, record.fd, ident.kind, ident.local,
                ident.remote, ident.path]
    if isinstance(record, Lost):
        return [TYPE_LOST, record.ts_ns, record.count, record.source]
    if isinstance(record, End):
        return [TYPE_END, record.ts_ns, record.events, record.bytes, record.lost]
    if isinstance(record, Header):
        f = record.filters
        filters = {"comms": list(f.comms), "pids": list(f.pids), "all": f.all,
                   "syscalls": list(f.syscalls), "follow": f.follow, "command": list(f.command)}
        return [TYPE_HEADER, record.format_major, record.format_minor, record.tool_version,
                record.host, record.kernel, record.start_ns, record.anchor_boot_ns,
                record.anchor_real_ns, list(record.argv), filters, record.snaplen,
                record.buffer, [_encode_derivation(step) for step in record.provenance]]
    raise TypeError(f"not a record: {record!r}")


def _encode_derivation(step: Derivation) -> list:
    return [step.op, step.tool_version, step.time_ns, list(step.argv), dict(step.notes),
            [encode_record(header) for header in step.inputs]]


class CaptureWriter:
    """Streams records into zstd frames on a binary file it does not own.

    Frames are closed after FRAME_MAX_RECORDS records, FRAME_MAX_BYTES of
    packed records, or FRAME_MAX_AGE_NS after the frame's first record
    (checked by `tick`), so a recorder killed with -9 loses at most that.
    `close` appends the index (see wtrec.format_index) after the end record.
    """

    def __init__(self, out: BinaryIO, header: Header, level: int = 3,
                 clock: Callable[[], int] = time.monotonic_ns):
        self._out = out
        self._clock = clock
        self._packer = msgpack.Packer(use_bin_type=True)
        self._compressor = zstandard.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True)
        self._pending: list[bytes] = []
        self._pending_records: list[Record] = []
        self._pending_bytes = 0
        self._frame_started_ns = 0
        self.frames = 0
        self.bytes_written = 0
        self.frame_entries: list[FrameEntry] = []
        self._stats = StatsAccumulator()
        self._emit(encode_preamble())
        self.write(header)
        self.flush()

    @property
    def stats(self) -> CaptureStats:
        """The totals of everything written so far (not the open frame)."""
        return self._stats.snapshot()

    def write(self, record: Record) -> None:
        """Adds one record, closing the frame when it is full."""
        packed = self._packer.pack(encode_record(record))
        if not self._pending:
            self._frame_started_ns = self._clock()
        self._pending.append(packed)
        self._pending_records.append(record)
        self._pending_bytes += len(packed)
        if len(self._pending) >= FRAME_MAX_RECORDS or self._pending_bytes >= FRAME_MAX_BYTES:
            self.flush()

    def tick(self) -> None:
        """Closes the open frame once its first record is a second old."""
        if self._pending and self._clock() - self._frame_started_ns >= FRAME_MAX_AGE_NS:
            self.flush()

    def flush(self) -> None:
        """Closes the open frame (if any) and pushes it to the file."""
        if not self._pending:
            return
        frame = self._compressor.compress(b"".join(self._pending))
        records = [r for r in self._pending_records if type(r) is not Header]
        events, first_ns, last_ns = self._stats.add_batch(records)
        self.frame_entries.append(FrameEntry(
            offset=self.bytes_written, size=len(frame), content_size=self._pending_bytes,
            records=len(self._pending), events=events, first_ns=first_ns, last_ns=last_ns))
        self._pending.clear()
        self._pending_records.clear()
        self._pending_bytes = 0
        self.frames += 1
        self._emit(frame)

    def close(self, end: End, index: bool = True) -> None:
        """Writes the end record, the last frame, the index and the zstd seek table.

        The file stays open; `index=False` leaves out both trailing frames.
        """
        self.write(end)
        self.flush()
        if not index:
            return
        sizes = [(self.frame_entries[0].offset, 0)]  # the preamble
        sizes += [(f.size, f.content_size) for f in self.frame_entries]
        frame = encode_index_frame(self.bytes_written, self.frame_entries, self.stats)
        if frame is not None:
            self._emit(frame)
            sizes.append((len(frame), 0))
        self._emit(encode_seek_table(sizes))

    def _emit(self, chunk: bytes) -> None:
        self._out.write(chunk)
        self._out.flush()
        self.bytes_written += len(chunk)


def start_reading(stream: BinaryIO) -> tuple[CaptureReader, Iterator[Record], Header]:
    """A reader, its iterator past the header, and the header: how offline commands begin."""
    reader = CaptureReader(stream)
    records = iter(reader)
    next(records, None)
    if reader.header is None:
        raise FormatError("the capture ends before its header record")
    return reader, records, reader.header


class _Truncated(Exception):
    """Internal: the input ended inside a frame."""


class _Source:
    """Reads exact byte counts from a stream and keeps the offset."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.offset = 0

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes, or _Truncated if the input ends first."""
        parts = []
        need = size
        while need:
            chunk = self._stream.read(min(need, 1 << 20))
            if not chunk:
                raise _Truncated()
            parts.append(chunk)
            need -= len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.offset += size
        return data

    def read_magic(self) -> bytes:
        """Four bytes, or b'' at a clean end of input."""
        first = self._stream.read(1)
        if not first:
            return b""
        self.offset += 1
        return first + self.read(3)


class CaptureReader:
    """A single-pass iterator of typed records from a capture.

    After iteration `truncated` says whether the capture ended early (cut
    inside a frame, or no end record); `warning` then holds the message.
    """

    def __init__(self, stream: BinaryIO):
        self._source = _Source(stream)
        self.header: Header | None = None
        self.end: End | None = None
        self.events = 0
        self.frames = 0
        self.compressed_bytes = 0  # of the data frames read so far...
        self.content_bytes = 0  # ...and what they held
        self.truncated = False
        self.version: tuple[int, int] | None = None

    @property
    def warning(self) -> str | None:
        if not self.truncated:
            return None
        return f"capture ends early after {self.events} events; was the recorder killed?"

    def __iter__(self) -> Iterator[Record]:
        try:
            self._read_preamble()
            for content, offset in self._iter_frames():
                for record in _decode_frame(content, offset, self.header is None):
                    if isinstance(record, Header):
                        if self.header is not None:
                            raise FormatError("a second header record", offset)
                        self._check_version(record.format_major, record.format_minor)
                        self.header = record
                    elif isinstance(record, IoEvent):
                        self.events += 1
                    elif isinstance(record, End):
                        self.end = record
                    yield record
                if self.end is not None:
                    return  # only the index follows; nothing in it is a record
        except _Truncated:
            self.truncated = True
            return
        if self.end is None:
            self.truncated = True

    def _read_preamble(self) -> None:
        src = self._source
        first = src.read_magic()
        if not first:
            raise FormatError("empty input, not a wtrace capture", 0)
        magic, = struct.unpack("<I", first)
        if magic != PREAMBLE_MAGIC:
            raise FormatError("no wtrace preamble; is this a .wtrace file?", 0)
        size, = struct.unpack("<I", src.read(4))
        if size < len(PREAMBLE_TAG) + 2 or size > MAX_SKIPPABLE:
            raise FormatError(f"preamble of {size} bytes", 4)
        payload = src.read(size)
        if payload[:len(PREAMBLE_TAG)] != PREAMBLE_TAG:
            raise FormatError("no WTRACE tag in the preamble", 8)
        major, minor = payload[len(PREAMBLE_TAG)], payload[len(PREAMBLE_TAG) + 1]
        self.version = (major, minor)
        self._check_version(major, minor)

    @staticmethod
    def _check_version(major: int, minor: int) -> None:
        if major > FORMAT_MAJOR:
            raise NewerFormatError(major, minor, FORMAT_MAJOR)
        if major < 1:
            raise FormatError(f"format version {major}.{minor} does not exist")

    def _iter_frames(self) -> Iterator[tuple[bytes, int]]:
        """Yields (decompressed content, offset) per zstd frame; skips skippables."""
        src = self._source
        while True:
            start = src.offset
            raw_magic = src.read_magic()
            if not raw_magic:
                return
            magic, = struct.unpack("<I", raw_magic)
            if magic & SKIPPABLE_MASK == SKIPPABLE_BASE:
                size, = struct.unpack("<I", src.read(4))
                if size > MAX_SKIPPABLE:
                    raise FormatError(f"skippable frame of {size} bytes", start)
                src.read(size)
                continue
            if magic != ZSTD_MAGIC:
                raise FormatError(f"unknown frame magic 0x{magic:08x}", start)
            content = self._read_zstd_frame(raw_magic, start)
            self.frames += 1
            self.compressed_bytes += src.offset - start
            self.content_bytes += len(content)
            yield content, start

    def _read_zstd_frame(self, raw_magic: bytes, start: int) -> bytes:
        return read_zstd_frame(self._source, raw_magic, start)


def read_zstd_frame(src: _Source, raw_magic: bytes, start: int) -> bytes:
    """The content of the zstd frame whose magic was just read, sizes checked first."""
    descriptor = src.read(1)
    d = descriptor[0]
    fcs_flag, single, reserved, has_checksum, dict_flag = (
        d >> 6, (d >> 5) & 1, (d >> 3) & 1, (d >> 2) & 1, d & 3)
    if reserved:
        raise FormatError("zstd frame header has the reserved bit set", start + 4)
    if dict_flag:
        raise FormatError("zstd frame needs a dictionary", start + 4)
    window = b"" if single else src.read(1)
    fcs_size = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fcs_flag]
    if fcs_size == 0:
        raise FormatError("zstd frame does not declare its content size", start)
    fcs_raw = src.read(fcs_size)
    content_size = int.from_bytes(fcs_raw, "little") + (256 if fcs_size == 2 else 0)
    if content_size > MAX_FRAME_CONTENT:
        raise FormatError(
            f"zstd frame declares {content_size} bytes, over the {MAX_FRAME_CONTENT} limit",
            start)
    parts = [raw_magic, descriptor, window, fcs_raw]
    budget = 2 * content_size + 1024  # compressed blocks are never much larger
    while True:
        block_header = src.read(3)
        value = int.from_bytes(block_header, "little")
        last, block_type, block_size = value & 1, (value >> 1) & 3, value >> 3
        if block_type == 3:
            raise FormatError("zstd block of reserved type", src.offset - 3)
        if block_size > MAX_BLOCK:
            raise FormatError(f"zstd block of {block_size} bytes", src.offset - 3)
        body = src.read(1 if block_type == 1 else block_size)
        parts += [block_header, body]
        budget -= len(body) + 3
        if budget < 0:
            raise FormatError("zstd frame larger than its content allows", start)
        if last:
            break
    if has_checksum:
        parts.append(src.read(4))
    try:
        content = zstandard.ZstdDecompressor().decompress(b"".join(parts))
    except zstandard.ZstdError as exc:
        raise FormatError(f"zstd frame does not decode ({exc})", start) from None
    if len(content) != content_size:
        raise FormatError("zstd frame content differs from its declared size", start)
    return content


def _reject_ext(code: int, data: bytes) -> None:
    raise ValueError(f"msgpack extension type {code} is not used by wtrace")


def _decode_frame(content: bytes, offset: int, expect_header: bool) -> Iterator[Record]:
    """Decodes one frame's records; a record cut at the frame's end is corruption."""
    limit = min(len(content), MAX_FRAME_CONTENT) or 1
    unpacker = msgpack.Unpacker(
        raw=False, use_list=True, strict_map_key=True, ext_hook=_reject_ext,
        max_buffer_size=limit, max_bin_len=limit, max_str_len=limit,
        max_array_len=MAX_RECORD_FIELDS, max_map_len=MAX_RECORD_FIELDS, max_ext_len=0)
    unpacker.feed(content)
    consumed = 0  # tell() also counts a partly read record, so track whole ones
    while True:
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            break
        except Exception as exc:  # noqa: BLE001 - msgpack's errors have no common base class
            raise FormatError(f"bad msgpack record in frame ({exc})", offset) from None
        consumed = unpacker.tell()
        record = _decode_record(obj, offset)
        if expect_header and not isinstance(record, Header):
            raise FormatError("the first record is not a header", offset)
        expect_header = False
        if record is not None:
            yield record
    if consumed != len(content):
        raise FormatError("frame ends inside a msgpack record", offset)


def _fast_io(obj: list) -> IoEvent | None:
    """The common case of an event record, checked in one expression; None: ask _decode_io.

    Same checks as _decode_io, without building its error messages; any
    doubt falls back to it, so the rules and the errors stay in one place.
    """
    if len(obj) < 12:
        return None
    kind, ts, pid, tid, uid, comm, fd, count, data, syscall, ret, seq = obj[:12]
    if (type(ts) is int and type(pid) is int and type(tid) is int and type(uid) is int
            and type(fd) is int and type(count) is int and type(comm) is bytes
            and type(data) is bytes and type(syscall) is str and syscall
            and type(ret) is int and type(seq) is int
            and 0 <= ts <= U64 and 0 <= pid <= U32 and 0 <= tid <= U32 and 0 <= uid <= U32
            and I32_MIN <= fd <= I32_MAX and 0 <= count <= U64 and 0 <= seq <= U64
            and -(1 << 63) <= ret < (1 << 63)):
        return IoEvent(ts, pid, tid, uid, comm, fd, count, data, syscall, ret, seq,
                       "in" if kind == TYPE_READ else "out")
    return None


def _decode_record(obj: object, offset: int) -> Record | None:
    """Type-checks one msgpack array; None for a record type we don't know."""
    if not isinstance(obj, list) or not obj:
        raise FormatError("a record is not a non-empty array", offset)
    kind = obj[0]
    if type(kind) is not int:
        raise FormatError("a record's type is not an integer", offset)
    if kind == TYPE_WRITE or kind == TYPE_READ:
        event = _fast_io(obj)
        if event is not None:
            return event
    decoder = _DECODERS.get(kind)
    if decoder is None:
        return None  # from a newer minor version: skip it
    return decoder(_Fields(obj, offset))


class _Fields:
    """Positional, type-checked access to a record's fields."""

    def __init__(self, values: list, offset: int):
        self._values = values
        self._offset = offset
        self._name = {TYPE_HEADER: "header", TYPE_WRITE: "write", TYPE_READ: "read",
                      TYPE_LOST: "lost", TYPE_END: "end", TYPE_FD: "fd"}.get(values[0], "record")

    def _get(self, index: int, what: str):
        if index >= len(self._values):
            raise FormatError(f"{self._name} record lacks field {index} ({what})", self._offset)
        return self._values[index]

    def _bad(self, index: int, what: str) -> FormatError:
        return FormatError(f"{self._name} record field {index} ({what}) has a bad value",
                           self._offset)

    def int(self, index: int, what: str, low: int = 0, high: int = U64) -> int:
        value = self._get(index, what)
        if type(value) is not int or not low <= value <= high:
            raise self._bad(index, what)
        return value

    def bytes(self, index: int, what: str) -> bytes:
        value = self._get(index, what)
        if type(value) is not bytes:
            raise self._bad(index, what)
        return value

    def has(self, index: int) -> bool:
        return index < len(self._values)

    def optional_int(self, index: int, what: str, low: int, high: int) -> int | None:
        """An int, or None when the field is nil or absent (older minor version)."""
        if not self.has(index) or self._values[index] is None:
            return None
        return self.int(index, what, low, high)

    def optional_str(self, index: int, what: str) -> str | None:
        if not self.has(index) or self._values[index] is None:
            return None
        return self.str(index, what)

    def str(self, index: int, what: str) -> str:
        value = self._get(index, what)
        if type(value) is not str:
            raise self._bad(index, what)
        return value

    def str_list(self, index: int, what: str) -> tuple[str, ...]:
        value = self._get(index, what)
        if type(value) is not list or any(type(v) is not str for v in value):
            raise self._bad(index, what)
        return tuple(value)

    def provenance(self, index: int, what: str, depth: int) -> tuple[Derivation, ...]:
        """Derivation steps (absent before 1.2); their input headers nest, boundedly."""
        if not self.has(index) or self._values[index] is None:
            return ()
        steps = self._get(index, what)
        if type(steps) is not list or depth >= MAX_PROVENANCE_DEPTH:
            raise self._bad(index, what)
        return tuple(self._derivation(step, index, what, depth) for step in steps)

    def _derivation(self, step: object, index: int, what: str, depth: int) -> Derivation:
        if type(step) is not list or len(step) < 6:
            raise self._bad(index, what)
        f = _Fields([TYPE_HEADER, *step], self._offset)
        notes = step[4]
        if type(notes) is not dict or any(type(k) is not str or type(v) is not str
                                          for k, v in notes.items()):
            raise self._bad(index, what)
        inputs = step[5]
        if type(inputs) is not list:
            raise self._bad(index, what)
        headers = []
        for item in inputs:
            if type(item) is not list or not item or item[0] != TYPE_HEADER:
                raise self._bad(index, what)
            headers.append(_decode_header(_Fields(item, self._offset), depth + 1))
        return Derivation(op=f.str(1, "step"), tool_version=f.str(2, "step tool version"),
                          time_ns=f.int(3, "step time"), argv=f.str_list(4, "step argv"),
                          notes=tuple(notes.items()), inputs=tuple(headers))

    def filters(self, index: int, what: str) -> Filters:
        value = self._get(index, what)
        if type(value) is not dict:
            raise self._bad(index, what)
        comms = value.get("comms", [])
        pids = value.get("pids", [])
        everything = value.get("all", False)
        syscalls = value.get("syscalls", ["write"])
        follow = value.get("follow", False)
        command = value.get("command", [])
        strings = (comms, syscalls, command)
        if (any(type(v) is not list or any(type(c) is not str for c in v) for v in strings)
                or type(pids) is not list or any(type(p) is not int for p in pids)
                or type(everything) is not bool or type(follow) is not bool):
            raise self._bad(index, what)
        return Filters(tuple(comms), tuple(pids), everything, tuple(syscalls), follow,
                       tuple(command))


def _decode_header(f: _Fields, depth: int = 0) -> Header:
    return Header(
        format_major=f.int(1, "format major", high=255),
        format_minor=f.int(2, "format minor", high=255),
        tool_version=f.str(3, "tool version"),
        host=f.str(4, "host"),
        kernel=f.str(5, "kernel"),
        start_ns=f.int(6, "start time"),
        anchor_boot_ns=f.int(7, "boot-clock anchor"),
        anchor_real_ns=f.int(8, "wall-clock anchor"),
        argv=f.str_list(9, "argv"),
        filters=f.filters(10, "filters"),
        snaplen=f.int(11, "snaplen", high=U32),
        buffer=f.str(12, "buffer"),
        provenance=f.provenance(13, "provenance", depth),
    )


def _decode_io(f: _Fields, direction: str) -> IoEvent:
    return IoEvent(
        ts_ns=f.int(1, "time"),
        pid=f.int(2, "pid", high=U32),
        tid=f.int(3, "tid", high=U32),
        uid=f.int(4, "uid", high=U32),
        comm=f.bytes(5, "comm"),
        fd=f.int(6, "fd", low=I32_MIN, high=I32_MAX),
        count=f.int(7, "count"),
        data=f.bytes(8, "data"),
        syscall=f.optional_str(9, "syscall") or ("write" if direction == "out" else "read"),
        ret=f.optional_int(10, "return value", low=-(1 << 63), high=(1 << 63) - 1),
        seq=f.optional_int(11, "sequence number", low=0, high=U64),
        direction=direction,
    )


def _decode_fd(f: _Fields) -> FdInfo:
    return FdInfo(
        ts_ns=f.int(1, "time"),
        pid=f.int(2, "pid", high=U32),
        fd=f.int(3, "fd", low=I32_MIN, high=I32_MAX),
        identity=FdIdentity(kind=f.str(4, "kind"), local=f.optional_str(5, "local address"),
                            remote=f.optional_str(6, "remote address"),
                            path=f.optional_str(7, "path")),
    )


def _decode_lost(f: _Fields) -> Lost:
    return Lost(ts_ns=f.int(1, "time"), count=f.int(2, "count"), source=f.str(3, "source"))


def _decode_end(f: _Fields) -> End:
    return End(ts_ns=f.int(1, "time"), events=f.int(2, "events"), bytes=f.int(3, "bytes"),
               lost=f.int(4, "lost"))


_DECODERS = {
    TYPE_HEADER: _decode_header,
    TYPE_WRITE: lambda f: _decode_io(f, "out"),
    TYPE_READ: lambda f: _decode_io(f, "in"),
    TYPE_FD: _decode_fd,
    TYPE_LOST: _decode_lost,
    TYPE_END: _decode_end,
}
