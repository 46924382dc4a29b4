"""The index a capture ends with: where each frame is, and the capture's totals.

Written by CaptureWriter.close in a zstd skippable frame, so zstd and every
reader that streams a capture skip it. It lets `info` answer without
decompressing anything. A file may come from anyone, so the index is
checked against the file (frames tile it, each frame header agrees, totals
add up) before it is trusted; any doubt means "no index", and the caller
scans. docs/FORMAT.md ("Index") is the byte-level specification.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import msgpack

from wtrec.records import End, FdIdentity
from wtrec.wtrace.framing import (
    INDEX_MAGIC,
    SEEK_TABLE_MAGIC,
    SEEKABLE_MAGIC,
    ZSTD_MAGIC_BYTES,
    parse_frame_header,
)
from wtrec.wtrace.stats import CaptureStats, Counts, FdTotals, ProcessTotals

INDEX_TAG = b"WTINDEX1"
FOOTER = struct.Struct("<QI8s")  # the file's last 20 bytes: index frame offset, CRC-32 of the body, tag
INDEX_VERSION = 1
MAX_INDEX_PAYLOAD = 64 << 20
# The zstd seekable format's seek table (zstd contrib/seekable_format): a
# skippable frame ending in a 9-byte footer, so generic seekable readers
# can jump into a capture. Its skippable magic is the one our preamble uses;
# readers tell them apart by position (first frame versus last).
SEEK_FOOTER = struct.Struct("<IBI")  # number of frames, descriptor, seekable magic
MAX_SEEK_TABLE = 64 << 20


@dataclass(frozen=True)
class FrameEntry:
    """One data frame: where it is, how big, and what it holds."""

    offset: int  # of the frame's first byte in the file
    size: int  # compressed bytes, the whole frame
    content_size: int  # decompressed bytes
    records: int
    events: int
    first_ns: int | None  # time range of its events
    last_ns: int | None


@dataclass
class Index:
    offset: int  # of the index frame
    frames: list[FrameEntry]
    stats: CaptureStats


class _Bad(Exception):
    """Internal: the index does not say what it should."""


def _counts_out(c: Counts) -> list:
    return [c.events, c.captured, c.expected, c.truncated, c.failed]


def _identity_out(identity: FdIdentity | None) -> list | None:
    if identity is None:
        return None
    return [identity.kind, identity.local, identity.remote, identity.path]


def encode_index_frame(offset: int, frames: list[FrameEntry], stats: CaptureStats) -> bytes | None:
    """The whole index frame for a file whose data ends at `offset`; None if it cannot be one.

    None when it would be too big, or a total does not fit 64 bits.
    """
    body = {
        "version": INDEX_VERSION,
        "frames": [[f.offset, f.size, f.content_size, f.records, f.events, f.first_ns, f.last_ns]
                   for f in frames],
        "records": stats.records, "lost": stats.lost,
        "first_ns": stats.first_ns, "last_ns": stats.last_ns,
        "all": _counts_out(stats.all),
        "processes": [[p.pid, p.comm, p.first_ns, p.last_ns, _counts_out(p.out),
                       _counts_out(p.into)] for p in stats.processes.values()],
        "fds": [[f.pid, f.fd, _identity_out(f.identity), _counts_out(f.out), _counts_out(f.into)]
                for f in stats.fds.values()],
        "end": None if stats.end is None else [stats.end.ts_ns, stats.end.events,
                                                 stats.end.bytes, stats.end.lost],
    }
    try:
        packed = msgpack.packb(body, use_bin_type=True)
    except OverflowError:
        return None  # a total passed 2^64 (absurd counts in a crafted input): readers scan
    payload = packed + FOOTER.pack(offset, zlib.crc32(packed), INDEX_TAG)
    if len(payload) > MAX_INDEX_PAYLOAD:
        return None  # readers would refuse it; they scan instead
    return struct.pack("<II", INDEX_MAGIC, len(payload)) + payload


def encode_seek_table(sizes: list[tuple[int, int]]) -> bytes:
    """The seek table frame for frames of these (compressed, decompressed) sizes, in order.

    Every frame of the file is listed, skippable ones (preamble, index) with
    a decompressed size of 0, so the compressed sizes add up to the offset
    of the seek table itself, as the seekable format requires.
    """
    entries = b"".join(struct.pack("<II", c, d) for c, d in sizes)
    body = entries + SEEK_FOOTER.pack(len(sizes), 0, SEEKABLE_MAGIC)
    return struct.pack("<II", SEEK_TABLE_MAGIC, len(body)) + body


def _seek_table(stream: BinaryIO, size: int) -> tuple[int, list[tuple[int, int]]] | None:
    """(offset, entries) of the seek table that ends the file, if it has one."""
    if size < 8 + SEEK_FOOTER.size:
        return None
    stream.seek(size - SEEK_FOOTER.size)
    count, descriptor, magic = SEEK_FOOTER.unpack(stream.read(SEEK_FOOTER.size))
    if magic != SEEKABLE_MAGIC or descriptor & 0x7C:  # reserved bits must be 0
        return None
    entry = 12 if descriptor & 0x80 else 8
    total = 8 + count * entry + SEEK_FOOTER.size
    if total > min(size, MAX_SEEK_TABLE):
        return None
    start = size - total
    stream.seek(start)
    frame_magic, length = struct.unpack("<II", stream.read(8))
    if frame_magic != SEEK_TABLE_MAGIC or length != total - 8:
        return None
    raw = stream.read(count * entry)
    entries = [struct.unpack_from("<II", raw, i * entry) for i in range(count)]
    return start, entries


def frame_content_size(head: bytes) -> int | None:
    """The content size a zstd frame header (first 18 bytes or fewer) declares."""
    if head[:4] != ZSTD_MAGIC_BYTES:
        return None
    frame = parse_frame_header(head)
    return None if frame is None else frame.content_size


def read_index(stream: BinaryIO) -> tuple[Index | None, str]:
    """The file's index if it has a sound one, else None and why not.

    The index is the file's last frame, or the one before the zstd seek
    table. `stream` must be seekable; its position is left undefined.
    """
    try:
        size = stream.seek(0, os.SEEK_END)
    except (OSError, ValueError):
        return None, "input is not seekable"
    seek_table = _seek_table(stream, size)
    end = seek_table[0] if seek_table else size  # the index ends where the seek table starts
    if end < 16 + 8 + FOOTER.size:
        return None, "no index"
    stream.seek(end - FOOTER.size)
    offset, crc, tag = FOOTER.unpack(stream.read(FOOTER.size))
    if tag != INDEX_TAG:
        return None, "no index (not closed by the recorder, or streamed)"
    try:
        index = _read_checked(stream, end, offset, crc)
        if seek_table is not None and seek_table[1] != _expected_seek_entries(index, end):
            raise _Bad("the zstd seek table does not list the file's frames")
    except _Bad as exc:
        return None, f"index ignored: {exc}"
    return index, "indexed"


def _expected_seek_entries(index: Index, end: int) -> list[tuple[int, int]]:
    preamble = index.frames[0].offset if index.frames else index.offset
    return ([(preamble, 0)] + [(f.size, f.content_size) for f in index.frames]
            + [(end - index.offset, 0)])


def _read_checked(stream: BinaryIO, size: int, offset: int, crc: int) -> Index:
    """Reads and checks the index frame that ends at `size`."""
    if not 16 <= offset <= size - 8 - FOOTER.size:
        raise _Bad("its offset is outside the file")
    stream.seek(offset)
    magic, length = struct.unpack("<II", stream.read(8))
    if magic != INDEX_MAGIC or offset + 8 + length != size or length > MAX_INDEX_PAYLOAD:
        raise _Bad("its frame header does not match its footer")
    payload = stream.read(length - FOOTER.size)
    if zlib.crc32(payload) != crc:
        raise _Bad("its checksum does not match")
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True,
                               max_bin_len=len(payload), max_str_len=len(payload),
                               max_array_len=len(payload), max_map_len=len(payload),
                               max_ext_len=0)
    except Exception as exc:
        raise _Bad(f"it does not decode ({exc})") from None
    index = Index(offset, _frames(body), _stats(body))
    _check_against_file(stream, index)
    return index


def _field(body: object, key: str) -> object:
    if type(body) is not dict or key not in body:
        raise _Bad(f"it lacks {key!r}")
    return body[key]


def _int(value: object) -> int:
    if type(value) is not int or value < 0 or value >= 1 << 64:
        raise _Bad("a number in it is out of range")
    return value


def _int_or_none(value: object) -> int | None:
    return None if value is None else _int(value)


def _list(value: object, length: int | None = None) -> list:
    if type(value) is not list or (length is not None and len(value) != length):
        raise _Bad("a list in it has the wrong shape")
    return value


def _frames(body: object) -> list[FrameEntry]:
    if _field(body, "version") != INDEX_VERSION:
        raise _Bad("it is of an unknown version")
    return [FrameEntry(_int(e[0]), _int(e[1]), _int(e[2]), _int(e[3]), _int(e[4]),
                       _int_or_none(e[5]), _int_or_none(e[6]))
            for e in (_list(v, 7) for v in _list(_field(body, "frames")))]


def _counts(value: object) -> Counts:
    return Counts(*(_int(v) for v in _list(value, 5)))


def _identity(value: object) -> FdIdentity | None:
    if value is None:
        return None
    kind, local, remote, path = _list(value, 4)
    if type(kind) is not str or any(v is not None and type(v) is not str
                                    for v in (local, remote, path)):
        raise _Bad("an fd identity in it is malformed")
    return FdIdentity(kind, local, remote, path)


def _stats(body: object) -> CaptureStats:
    stats = CaptureStats(all=_counts(_field(body, "all")), lost=_int(_field(body, "lost")),
                         records=_int(_field(body, "records")),
                         first_ns=_int_or_none(_field(body, "first_ns")),
                         last_ns=_int_or_none(_field(body, "last_ns")))
    for row in _list(_field(body, "processes")):
        pid, comm, first_ns, last_ns, out, into = _list(row, 6)
        if type(comm) is not bytes:
            raise _Bad("a comm in it is not bytes")
        stats.processes[_int(pid)] = ProcessTotals(_int(pid), comm, _counts(out), _counts(into),
                                                   _int(first_ns), _int(last_ns))
    for row in _list(_field(body, "fds")):
        pid, fd, identity, out, into = _list(row, 5)
        if type(fd) is not int or not -(1 << 31) <= fd < 1 << 31:
            raise _Bad("an fd in it is out of range")
        ident = _identity(identity)
        stats.fds[(_int(pid), fd, ident)] = FdTotals(_int(pid), fd, ident, _counts(out), _counts(into))
    end = _field(body, "end")
    if end is not None:
        stats.end = End(*(_int(v) for v in _list(end, 4)))
    return stats


def _check_against_file(stream: BinaryIO, index: Index) -> None:
    """Frames must tile the file from the preamble to the index, as declared."""
    stream.seek(4)
    preamble_size, = struct.unpack("<I", stream.read(4))
    position = 8 + preamble_size
    for entry in index.frames:
        if entry.offset != position or entry.size < 6:
            raise _Bad(f"it places a frame at byte {entry.offset}, the file has one at {position}")
        stream.seek(entry.offset)
        if frame_content_size(stream.read(18)) != entry.content_size:
            raise _Bad(f"the frame at byte {entry.offset} is not what it says")
        position += entry.size
    if position != index.offset:
        raise _Bad("its frames do not reach the index")
    stats = index.stats
    if sum(e.events for e in index.frames) != stats.all.events:
        raise _Bad("its frame event counts do not add up")
    if sum(p.out.events + p.into.events for p in stats.processes.values()) != stats.all.events:
        raise _Bad("its per-process totals do not add up")
    if stats.end is not None and (stats.end.events, stats.end.lost) != (stats.all.events,
                                                                         stats.lost):
        raise _Bad("its totals differ from the end record")
