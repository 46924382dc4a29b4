"""Reading what can be read from a damaged or cut capture, for `wtrec recover`.

The strict reader stops at the first problem; this one notes it and moves
on. A frame that fails its checks or its checksum is dropped whole (its
bytes may decode to wrong records that still parse), and the next frame is
found by its magic number. A frame cut by the end of the file is
decompressed as far as it goes and its whole records kept: what is there is
what was written. Every record handed on has passed the strict reader's checks.
"""

import mmap
import re
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import zstandard

from wtrec.errors import FormatError, InputError
from wtrec.records import FORMAT_MAJOR, FORMAT_MINOR, End, Filters, Header, Record
from wtrec.wtrace.codec import decode_prefix
from wtrec.wtrace.framing import (
    MAX_FRAME_CONTENT,
    MAX_SKIPPABLE,
    PREAMBLE_MAGIC,
    ZSTD_MAGIC,
    ZSTD_MAGIC_BYTES,
    ByteSource,
    Truncated,
    is_skippable,
    parse_frame_header,
    read_zstd_frame,
)

MAX_PROBLEMS = 20  # a damaged file can hold millions; the rest are counted


@dataclass
class Salvage:
    """Filled in as `records` is consumed: what was kept and what was not."""

    header: Header
    records: Iterator[Record] = field(default_factory=lambda: iter(()))
    problems: list[str] = field(default_factory=list)  # the first MAX_PROBLEMS of them
    problem_count: int = 0  # all of them
    frames_ok: int = 0
    frames_partial: int = 0
    frames_lost: int = 0
    lost_bytes: int = 0
    end_ns: int | None = None
    size: int = 0  # of the input, in bytes...
    examined: int = 0  # ...and how far into it the records handed out so far reach

    def note(self, problem: str) -> None:
        """Counts a problem; only the first MAX_PROBLEMS are kept to be told."""
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


def _unknown_header() -> Header:
    now = time.time_ns()
    return Header(FORMAT_MAJOR, FORMAT_MINOR, "unknown", "unknown", "unknown", now, 0, now,
                  (), Filters(syscalls=()), 0, "unknown")


def _partial_content(raw: bytes) -> bytes:
    """As much of a damaged frame's content as decompresses, within the size bound."""
    out = bytearray()
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=False)
        while len(out) < MAX_FRAME_CONTENT:
            chunk = reader.read(1 << 16)
            if not chunk:
                break
            out += chunk
    except zstandard.ZstdError:
        pass
    return bytes(out[:MAX_FRAME_CONTENT])


def _whole_records(content: bytes, offset: int, result: Salvage) -> list[Record]:
    records, error = decode_prefix(content, offset)
    if error is not None:
        result.note(f"frame at byte {offset}: kept {len(records)} records, then {error.reason}")
    return records


def salvage(stream: BinaryIO) -> Salvage:
    """Reads the header now; the rest as `result.records` is iterated."""
    try:
        data = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot map the input ({exc}); is it empty?") from None
    result = Salvage(header=_unknown_header(), size=len(data))
    frames = _iter_frames(data, result)
    first = next(frames, None)
    pending: list[Record] = []
    if first is not None:
        records = first
        if records and isinstance(records[0], Header):
            result.header = records[0]
            records = records[1:]
        else:
            result.note("the header record is lost; an 'unknown' header stands in")
        pending = records

    def all_records() -> Iterator[Record]:
        for batch in ([pending], frames):
            for records in batch:
                for record in records:
                    if isinstance(record, Header):
                        result.note("a second header record was dropped")
                        continue
                    if isinstance(record, End):
                        result.end_ns = record.ts_ns
                        continue
                    yield record
        data.close()

    result.records = all_records()
    return result


def _iter_frames(data: mmap.mmap, result: Salvage) -> Iterator[list[Record]]:
    """Each readable frame's records; damage is noted in `result` and stepped over.

    Unreadable bytes are noted as one problem per run, however many false
    frame starts the run holds.
    """
    size = len(data)
    position = 0
    if size >= 8 and struct.unpack_from("<I", data, 0)[0] == PREAMBLE_MAGIC:
        position = 8 + struct.unpack_from("<I", data, 4)[0]
    else:
        result.note("no wtrace preamble at byte 0; looking for frames")
    bad_from: int | None = None  # start of the current run of unreadable bytes

    def end_bad_run(at: int) -> None:
        nonlocal bad_from
        if bad_from is not None:
            result.note(f"bytes {bad_from}..{at} are not a readable frame; skipped")
            result.lost_bytes += at - bad_from
            bad_from = None

    while position + 4 <= size:
        result.examined = position
        magic, = struct.unpack_from("<I", data, position)
        if is_skippable(magic) and position + 8 <= size:
            length, = struct.unpack_from("<I", data, position + 4)
            if length <= MAX_SKIPPABLE and position + 8 + length <= size:
                end_bad_run(position)
                position += 8 + length
                continue
        if magic == ZSTD_MAGIC and _plausible_header(data[position:position + 18]):
            records, next_position = _read_frame(data, position, result, end_bad_run)
            if records is not None:
                yield records
            if next_position is not None:
                position = next_position
                continue
        if bad_from is None:
            bad_from = position
        found = _FRAME_START.search(data, position + 1)
        position = size if found is None else found.start()
    end_bad_run(min(position, size))
    result.examined = size
    if position < size:
        result.lost_bytes += size - position


def _plausible_descriptor(descriptor: int) -> bool:
    """No reserved bit, no dictionary, and a declared content size."""
    return (not descriptor & 0x0B) and bool(descriptor >> 6 or descriptor & 0x20)


# The zstd magic followed by a descriptor read_zstd_frame would accept, so a
# run of false starts (a file of magic numbers) is passed over in one search.
_FRAME_START = re.compile(re.escape(ZSTD_MAGIC_BYTES) + b"[" + b"".join(
    re.escape(bytes([d])) for d in range(256) if _plausible_descriptor(d)) + b"]")


def _plausible_header(head: bytes) -> bool:
    """Whether a zstd frame could start here (the checks read_zstd_frame makes first)."""
    frame = parse_frame_header(head)
    return (frame is not None and not frame.reserved_bit and not frame.needs_dictionary
            and frame.content_size is not None and frame.content_size <= MAX_FRAME_CONTENT)


def _read_frame(data: mmap.mmap, position: int, result: Salvage,
                end_bad_run: Callable[[int], None]):
    """(records or None, where the next frame starts or None if unknown)."""
    data.seek(position + 4)
    source = ByteSource(data)
    try:
        content = read_zstd_frame(source, ZSTD_MAGIC_BYTES, position)
    except Truncated:
        end_bad_run(position)
        records = _whole_records(_partial_content(bytes(data[position:])), position, result)
        result.note(f"the file is cut inside the frame at byte {position}; "
                               f"kept {len(records)} whole records from it")
        result.frames_partial += 1
        result.lost_bytes += len(data) - position
        return records, len(data)
    except FormatError as exc:
        end_bad_run(position)
        # A damaged frame may decode to wrong bytes that still parse, and its
        # checksum cannot say which: none of its records are kept.
        result.frames_lost += 1
        result.note(f"frame at byte {position} is damaged ({exc.reason}); "
                               "its records are dropped")
        return None, None
    end_bad_run(position)
    end = position + 4 + source.offset
    problems_before = result.problem_count
    records = _whole_records(content, position, result)
    if result.problem_count > problems_before:
        result.frames_partial += 1
    else:
        result.frames_ok += 1
    return records, end
