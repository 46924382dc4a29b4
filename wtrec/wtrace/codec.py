"""Records to msgpack arrays and back: the only place that knows each record's fields.

Decoding treats its input as hostile: msgpack sizes are bounded, every
field is type- and range-checked, and a record of an unknown type is
skipped (it comes from a newer minor version). The only exception that
leaves is FormatError. docs/FORMAT.md lists every field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import compress, islice
from operator import attrgetter
from types import ModuleType
from typing import TYPE_CHECKING

import msgpack

from wtrec.errors import FormatError
from wtrec.records import (
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
    SeriesPart,
    TlsInfo,
    event_row,
)
from wtrec.wtrace.framing import MAX_FRAME_CONTENT

if TYPE_CHECKING:
    from wtrec.wtrace.checked_frames import CommonRecord

MAX_RECORD_FIELDS = 4096  # msgpack array/map lengths
MAX_PROVENANCE_DEPTH = 8
MAX_SERIES_ID = 64  # characters of a series id  # a derived file's inputs' inputs' ... headers

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


def encode_record(record: Record) -> list:
    """The msgpack-ready array for one record (see docs/FORMAT.md)."""
    if isinstance(record, IoEvent):
        fields = [*event_row(record), record.seq]
        # 1.4's fields only where they say something: other events stay as in 1.3.
        if record.tls is not None:
            fields += [record.layer, _encode_tls(record.tls)]
        elif record.tls_call_ns is not None or record.layer != "syscall":
            fields += [record.layer, None, record.tls_call_ns]
        return fields
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
        if f.tls:  # since 1.4; absent without --tls, so such headers stay as in 1.3
            filters["tls"] = True
            filters["tls_targets"] = [[path, family, list(symbols)]
                                      for path, family, symbols in f.tls_targets]
        fields = [TYPE_HEADER, record.format_major, record.format_minor, record.tool_version,
                  record.host, record.kernel, record.start_ns, record.anchor_boot_ns,
                  record.anchor_real_ns, list(record.argv), filters, record.snaplen,
                  record.buffer, [_encode_derivation(step) for step in record.provenance]]
        if record.series is not None:  # absent outside a series: such headers stay as in 1.2
            fields.append([record.series.id, record.series.index])
        return fields
    raise TypeError(f"not a record: {record!r}")


def _encode_tls(tls: TlsInfo) -> dict:
    return {"library": tls.library, "object": tls.object, "conn": tls.conn,
            "fd_source": tls.fd_source, "call_ns": tls.call_ns, "raw_ret": tls.raw_ret}


def _encode_derivation(step: Derivation) -> list:
    return [step.op, step.tool_version, step.time_ns, list(step.argv), dict(step.notes),
            [encode_record(header) for header in step.inputs]]


def _reject_ext(code: int, data: bytes) -> None:
    raise ValueError(f"msgpack extension type {code} is not used by wtrace")


# Reader bounds on msgpack objects, so memory follows the bytes a frame
# really holds: one byte of content can make a 56-byte Python object, so
# bytes alone do not bound it. The writer's frames hold at most 1024 records
# of about a dozen objects each.
MAX_FRAME_OBJECTS = 1 << 18  # arrays, maps and their elements in one frame
CHUNK_RECORDS = 128  # records unpacked, checked and handed on at a time
READ_SLICE = 64 << 10  # bytes of a frame msgpack takes at a time


def no_events(_data: bytes) -> bool:
    """A `keep` that hands on no event (and is known to, so nothing is tried)."""
    return False


class _TooManyObjects(Exception):
    pass


def _object_budget() -> tuple[Callable[[list], list], Callable[[dict], dict]]:
    """msgpack hooks that count every array, map and element, and stop at the frame bound."""
    left = [MAX_FRAME_OBJECTS]

    def count_list(value: list) -> list:
        left[0] -= len(value) + 1
        if left[0] < 0:
            raise _TooManyObjects()
        return value

    def count_map(value: dict) -> dict:
        left[0] -= 2 * len(value) + 1
        if left[0] < 0:
            raise _TooManyObjects()
        return value

    return count_list, count_map


def decode_frame(content: bytes, offset: int, expect_header: bool,
                 keep: Callable[[bytes], object] | None = None) -> tuple[list[Record], int]:
    """One frame's records, every field checked, and how many events it holds.

    With `keep`, an event is handed on only if keep(payload) is true; the
    others are checked and counted all the same. Records other than events
    are always handed on. Raises FormatError (only).
    """
    tally = [0]
    records = [r for chunk in iter_frame(content, offset, expect_header, keep, tally)
               for r in chunk]
    return records, tally[0]


def decode_prefix(content: bytes, offset: int) -> tuple[list[Record], FormatError | None]:
    """The whole records a damaged frame starts with, and what stopped them (for salvage)."""
    records: list[Record] = []
    try:
        for chunk in iter_frame(content, offset, False, None, [0], chunk_records=1):
            records += chunk
    except FormatError as exc:
        return records, exc
    return records, None


class _ContentThenNil:
    """A frame's content, then one nil, read a slice at a time (msgpack copies no more)."""

    def __init__(self, content: bytes):
        self._view = memoryview(content)
        self._position = 0
        self._nil = True

    def read(self, size: int) -> bytes:
        if self._position < len(self._view):
            piece = bytes(self._view[self._position:self._position + size])
            self._position += len(piece)
            return piece
        if self._nil:
            self._nil = False
            return b"\xc0"
        return b""


def iter_frame(content: bytes, offset: int, expect_header: bool,
               keep: Callable[[bytes], object] | None, tally: list[int],
               chunk_records: int = CHUNK_RECORDS, *,
               find: Callable[[bytes, int], int] | None = None,
               first_match: int | None = None,
               record_count: int | None = None) -> Iterator[list[Record]]:
    """decode_frame's work a chunk of records at a time; adds the events it checks to tally[0].

    Lazy, so a reader holds one chunk's records, and a caller keeps what
    came before an error. With `find` (find(content, start): where the
    first place at or after `start` that a kept payload may begin a match,
    or -1), `keep` is asked only of the chunks whose bytes hold such a
    place; the events of the others are checked and counted, not kept.
    `first_match`, when known, is find(content, 0) (found by the thread
    that decompressed the frame); `record_count`, how many records the
    frame holds by the file's index (a hint: checked, never trusted).

    A frame of only the common records is decoded and checked in one C
    pass (checked_frames); any other frame, and any that pass refuses, is
    unpacked and checked here record by record, which names what is wrong.
    """
    matches = None if find is None or keep is None or keep is no_events else (
        _MatchCursor(content, find, first_match))
    if not expect_header:
        # The index's count spares counting the records unless the chunk
        # bounds are needed: where a match may begin, only some chunks'
        # events are tested.
        needs_bounds = matches is not None and first_match != -1
        checked = _decode_checked(content, chunk_records,
                                  None if needs_bounds else record_count)
        if checked is not None:
            yield from _iter_checked(*checked, content, offset, keep, tally, chunk_records,
                                     matches)
            return
    limit = min(len(content), MAX_FRAME_CONTENT) or 1
    # Every msgpack object takes at least a byte, so a frame of at most
    # MAX_FRAME_OBJECTS bytes is within the bound without counting.
    hooks = {} if len(content) <= MAX_FRAME_OBJECTS else dict(zip(
        ("list_hook", "object_hook"), _object_budget(), strict=True))
    # Iteration stops at the end of the bytes, also inside a record; a nil
    # after the content unpacks as itself only after a record boundary.
    unpacker = msgpack.Unpacker(
        _ContentThenNil(content), read_size=READ_SLICE,
        raw=False, use_list=True, strict_map_key=True, ext_hook=_reject_ext, **hooks,
        max_buffer_size=MAX_FRAME_CONTENT + 1, max_bin_len=limit, max_str_len=limit,
        max_array_len=MAX_RECORD_FIELDS, max_map_len=MAX_RECORD_FIELDS, max_ext_len=0)
    objects = MAX_FRAME_OBJECTS
    try:
        chunk = list(islice(unpacker, chunk_records))
        if not chunk:  # not even the nil: the content ends inside a record
            raise msgpack.OutOfData()
        chunk_start, chunk_end = 0, unpacker.tell()
        while chunk:
            following = list(islice(unpacker, chunk_records))
            following_end = unpacker.tell()
            if not following:  # the last chunk: it must end with the nil
                if chunk[-1] is not None:
                    raise msgpack.OutOfData()
                chunk.pop()
            objects -= len(chunk)
            if objects < 0:
                raise _TooManyObjects()
            records: list[Record] = []
            if expect_header and chunk:
                header = _decode_record(chunk[0], offset)
                if not isinstance(header, Header):
                    raise FormatError("the first record is not a header", offset)
                records.append(header)
                chunk = chunk[1:]
                expect_header = False
            chunk_keep = keep
            if matches is not None and not matches.within(chunk_start, chunk_end):
                chunk_keep = no_events
            tally[0] += _decode_chunk(chunk, offset, chunk_keep, records)
            yield records
            chunk = following
            chunk_start, chunk_end = chunk_end, following_end
    except FormatError:
        raise
    except _TooManyObjects:
        raise FormatError(f"frame holds more than {MAX_FRAME_OBJECTS} msgpack objects",
                          offset) from None
    except msgpack.OutOfData:
        raise FormatError("frame ends inside a msgpack record", offset) from None
    except Exception as exc:
        raise FormatError(f"bad msgpack record in frame ({exc})", offset) from None
    if expect_header:
        raise FormatError("the first record is not a header", offset)


_checked_frames: ModuleType | None = None


def _decode_checked(content: bytes, chunk_records: int, record_count: int | None
                    ) -> tuple[list[CommonRecord], list[int] | None] | None:
    """The frame's records as checked structs and its chunk bounds, if it holds only common ones.

    With a record count that proves right (msgspec takes exactly that many
    records and nothing after), the records are not counted first, and the
    chunk bounds are not known (None). checked_frames (and msgspec) load
    with the first frame of events, so commands that read none (`info`
    from the index) start without them.
    """
    global _checked_frames
    if _checked_frames is None:
        from wtrec.wtrace import checked_frames
        _checked_frames = checked_frames
    if record_count is not None:
        records = _checked_frames.decode(content, record_count)
        if records is not None:
            return records, None
    counted = _checked_frames.record_bounds(content, chunk_records)
    if counted is None:
        return None
    count, bounds = counted
    records = _checked_frames.decode(content, count)
    return None if records is None else (records, bounds)


def _iter_checked(records: list[CommonRecord], bounds: list[int] | None, content: bytes,
                  offset: int, keep: Callable[[bytes], object] | None, tally: list[int],
                  chunk_records: int, matches: _MatchCursor | None) -> Iterator[list[Record]]:
    """iter_frame's chunks, from a frame that checked_frames decoded (so nothing is wrong in it).

    Without chunk bounds, `keep` is asked of every event of a frame where a
    match may begin, and of none elsewhere.
    """
    assert _checked_frames is not None  # loaded by _decode_checked
    event_types, event_of = _checked_frames.EVENT_TYPES, _checked_frames.io_event
    if bounds is None and matches is not None:
        keep = keep if matches.within(0, len(content)) else no_events
        matches = None
    kinds = list(map(type, records))
    only_events = sum(map(kinds.count, event_types)) == len(records)
    chunk_start = 0
    last = len(records) - 1
    for number, first in enumerate(range(0, len(records), chunk_records)):
        chunk = records[first:first + chunk_records]
        chunk_end = bounds[number] if bounds is not None and number < len(bounds) else len(
            content)
        chunk_keep = keep
        if matches is not None and not matches.within(chunk_start, chunk_end):
            chunk_keep = no_events
        chunk_start = chunk_end
        out: list[Record] = []
        if only_events:
            tally[0] += len(chunk)
            if chunk_keep is None:
                out = list(map(event_of, chunk))
            elif chunk_keep is not no_events:
                out = list(map(event_of, compress(chunk, map(chunk_keep, map(_DATA, chunk)))))
        else:
            for record in chunk:
                if isinstance(record, event_types):
                    tally[0] += 1
                    if chunk_keep is None or (chunk_keep is not no_events
                                              and chunk_keep(record.data)):
                        out.append(event_of(record))
                else:
                    note = _decode_record(_checked_frames.as_list(record), offset)
                    assert note is not None  # a known type, its fields checked by msgspec
                    out.append(note)
        if out or first + chunk_records > last:  # an empty chunk's count goes with the next
            yield out


_DATA = attrgetter("data")


class _MatchCursor:
    """Whether a stretch of a frame's bytes holds the start of a match, asked in frame order.

    Each question searches from the stretch's start unless the last answer
    already lies at or past it, so a frame is searched about once in all;
    `first`, when known, is the answer of a search from the frame's start.
    """

    def __init__(self, content: bytes, find: Callable[[bytes, int], int],
                 first: int | None = None):
        self._content = content
        self._find = find
        self._next = -1 if first is None else first  # the first match start at or after
        self._exhausted = first == -1  # the last search's start (the frame's, for `first`)

    def within(self, start: int, end: int) -> bool:
        if self._next < start:
            if self._exhausted:
                return False
            self._next = self._find(self._content, start)
            if self._next < 0:
                self._exhausted = True
                return False
        return self._next < end


_INT = {int}
_BYTES = {bytes}
_STR = {str}


def _ints_within(column: tuple, low: int, high: int) -> bool:
    return set(map(type, column)) == _INT and low <= min(column) and max(column) <= high


def _event_columns(rows: list[list]) -> tuple | None:
    """The columns of event-shaped rows when every field passes its check, else None.

    The same checks as _fast_io, made a column at a time by C loops (set,
    map, min, max), so the cost per event is a few machine loops, not Python.
    """
    (kinds, ts, pid, tid, uid, comm, fd, count, data, syscall, ret, seq) = zip(*rows, strict=True)
    if not (set(kinds) <= {TYPE_WRITE, TYPE_READ} and set(map(type, kinds)) == _INT
            and _ints_within(ts, 0, U64) and _ints_within(pid, 0, U32)
            and _ints_within(tid, 0, U32) and _ints_within(uid, 0, U32)
            and _ints_within(fd, I32_MIN, I32_MAX) and _ints_within(count, 0, U64)
            and _ints_within(ret, -(1 << 63), (1 << 63) - 1) and _ints_within(seq, 0, U64)
            and set(map(type, comm)) == _BYTES and set(map(type, data)) == _BYTES
            and set(map(type, syscall)) == _STR and all(syscall)):
        return None
    return kinds, ts, pid, tid, uid, comm, fd, count, data, syscall, ret, seq


def _decode_chunk(chunk: list, offset: int, keep: Callable[[bytes], object] | None,
                  out: list[Record]) -> int:
    """Appends the chunk's records (events only if kept) to `out`; returns its event count."""
    if not chunk:
        return 0
    if set(map(type, chunk)) != {list}:
        return _decode_slowly(chunk, offset, keep, out)
    lengths = list(map(len, chunk))
    if lengths.count(12) == len(chunk):
        positions = None  # all event-shaped: the common case
        rows = chunk
    else:
        positions = [i for i, n in enumerate(lengths) if n == 12]
        rows = [chunk[i] for i in positions]
    columns = _event_columns(rows) if rows else None
    if columns is None:
        return _decode_slowly(chunk, offset, keep, out)
    directions = ["in" if kind == TYPE_READ else "out" for kind in columns[0]]
    args = (*columns[1:], directions)
    if keep is None:
        wanted: list[int] | range = range(len(rows))
        built = list(map(IoEvent, *args))
    elif keep is no_events:
        wanted, built = [], []
    else:
        wanted = [i for i, hit in enumerate(map(keep, columns[8])) if hit]
        built = [IoEvent(*(arg[i] for arg in args)) for i in wanted]
    if positions is None:
        out.extend(built)
        return len(rows)
    # Mixed: put the other records back between the kept events, in file order.
    event_at = dict(zip((positions[i] for i in wanted), built, strict=True))
    is_event = set(positions)
    events = len(rows)
    for i, obj in enumerate(chunk):
        event = event_at.get(i)
        if event is not None:
            out.append(event)
        elif i not in is_event:
            events += _decode_slowly([obj], offset, keep, out)
    return events


def _decode_slowly(chunk: list, offset: int, keep: Callable[[bytes], object] | None,
                   out: list[Record]) -> int:
    """Record by record, for chunks the column checks do not cover (and for their errors)."""
    events = 0
    for obj in chunk:
        record = _decode_record(obj, offset)
        if record is None:
            continue
        if isinstance(record, IoEvent):
            events += 1
            if keep is not None and not keep(record.data):
                continue
        out.append(record)
    return events


def _fast_io(obj: list) -> IoEvent | None:
    """The common case of an event record, checked in one expression; None: ask _decode_io.

    Same checks as _decode_io, without building its error messages; any
    doubt falls back to it, so the rules and the errors stay in one place.
    """
    if len(obj) != 12:  # 1.4's TLS fields, or a newer version's: _decode_io
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
    if kind in (TYPE_WRITE, TYPE_READ):
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

    def integer(self, index: int, what: str, low: int = 0, high: int = U64) -> int:
        value = self._get(index, what)
        if type(value) is not int or not low <= value <= high:
            raise self._bad(index, what)
        return value

    def blob(self, index: int, what: str) -> bytes:
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
        return self.integer(index, what, low, high)

    def optional_str(self, index: int, what: str) -> str | None:
        if not self.has(index) or self._values[index] is None:
            return None
        return self.text(index, what)

    def text(self, index: int, what: str) -> str:
        value = self._get(index, what)
        if type(value) is not str:
            raise self._bad(index, what)
        return value

    def text_list(self, index: int, what: str) -> tuple[str, ...]:
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
        return Derivation(op=f.text(1, "step"), tool_version=f.text(2, "step tool version"),
                          time_ns=f.integer(3, "step time"), argv=f.text_list(4, "step argv"),
                          notes=tuple(notes.items()), inputs=tuple(headers))

    def series(self, index: int, what: str) -> SeriesPart | None:
        """The file's place in a rotated recording (absent before 1.3, nil outside one)."""
        if not self.has(index) or self._values[index] is None:
            return None
        value = self._values[index]
        if (type(value) is not list or len(value) < 2 or type(value[0]) is not str
                or not 1 <= len(value[0]) <= MAX_SERIES_ID or type(value[1]) is not int
                or not 0 <= value[1] <= U32):
            raise self._bad(index, what)
        return SeriesPart(value[0], value[1])

    def tls(self, index: int, what: str) -> TlsInfo | None:
        """A TLS-layer event's map (since 1.4; nil or absent otherwise)."""
        if not self.has(index) or self._values[index] is None:
            return None
        value = self._values[index]
        if type(value) is not dict:
            raise self._bad(index, what)
        library, obj = value.get("library"), value.get("object")
        conn, source = value.get("conn"), value.get("fd_source")
        call_ns, raw_ret = value.get("call_ns"), value.get("raw_ret")
        if (type(library) is not str or (obj is not None and type(obj) is not str)
                or type(conn) is not int or not 0 <= conn <= U64 or type(source) is not str
                or type(call_ns) is not int or not 0 <= call_ns <= U64
                or type(raw_ret) is not int or not -(1 << 63) <= raw_ret < (1 << 63)):
            raise self._bad(index, what)
        return TlsInfo(library=library, object=obj, conn=conn, fd_source=source,
                       call_ns=call_ns, raw_ret=raw_ret)

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
        tls = value.get("tls", False)
        targets = value.get("tls_targets", [])
        strings = (comms, syscalls, command)
        if (any(type(v) is not list or any(type(c) is not str for c in v) for v in strings)
                or type(pids) is not list or any(type(p) is not int for p in pids)
                or type(everything) is not bool or type(follow) is not bool
                or type(tls) is not bool or type(targets) is not list
                or not all(_is_tls_target(t) for t in targets)):
            raise self._bad(index, what)
        return Filters(tuple(comms), tuple(pids), everything, tuple(syscalls), follow,
                       tuple(command), tls,
                       tuple((path, family, tuple(symbols)) for path, family, symbols in targets))


def _is_tls_target(target: object) -> bool:
    """[path, family, [symbols]], as header filters' tls_targets hold them."""
    return (type(target) is list and len(target) == 3 and type(target[0]) is str
            and type(target[1]) is str and type(target[2]) is list
            and all(type(symbol) is str for symbol in target[2]))


def _decode_header(f: _Fields, depth: int = 0) -> Header:
    return Header(
        format_major=f.integer(1, "format major", high=255),
        format_minor=f.integer(2, "format minor", high=255),
        tool_version=f.text(3, "tool version"),
        host=f.text(4, "host"),
        kernel=f.text(5, "kernel"),
        start_ns=f.integer(6, "start time"),
        anchor_boot_ns=f.integer(7, "boot-clock anchor"),
        anchor_real_ns=f.integer(8, "wall-clock anchor"),
        argv=f.text_list(9, "argv"),
        filters=f.filters(10, "filters"),
        snaplen=f.integer(11, "snaplen", high=U32),
        buffer=f.text(12, "buffer"),
        provenance=f.provenance(13, "provenance", depth),
        series=f.series(14, "series"),
    )


def _decode_io(f: _Fields, direction: str) -> IoEvent:
    return IoEvent(
        ts_ns=f.integer(1, "time"),
        pid=f.integer(2, "pid", high=U32),
        tid=f.integer(3, "tid", high=U32),
        uid=f.integer(4, "uid", high=U32),
        comm=f.blob(5, "comm"),
        fd=f.integer(6, "fd", low=I32_MIN, high=I32_MAX),
        count=f.integer(7, "count"),
        data=f.blob(8, "data"),
        syscall=f.optional_str(9, "syscall") or ("write" if direction == "out" else "read"),
        ret=f.optional_int(10, "return value", low=-(1 << 63), high=(1 << 63) - 1),
        seq=f.optional_int(11, "sequence number", low=0, high=U64),
        direction=direction,
        layer=f.optional_str(12, "layer") or "syscall",
        tls=f.tls(13, "tls"),
        tls_call_ns=f.optional_int(14, "enclosing TLS call", low=0, high=U64),
    )


def _decode_fd(f: _Fields) -> FdInfo:
    return FdInfo(
        ts_ns=f.integer(1, "time"),
        pid=f.integer(2, "pid", high=U32),
        fd=f.integer(3, "fd", low=I32_MIN, high=I32_MAX),
        identity=FdIdentity(kind=f.text(4, "kind"), local=f.optional_str(5, "local address"),
                            remote=f.optional_str(6, "remote address"),
                            path=f.optional_str(7, "path")),
    )


def _decode_lost(f: _Fields) -> Lost:
    return Lost(ts_ns=f.integer(1, "time"), count=f.integer(2, "count"), source=f.text(3, "source"))


def _decode_end(f: _Fields) -> End:
    return End(ts_ns=f.integer(1, "time"), events=f.integer(2, "events"), bytes=f.integer(3, "bytes"),
               lost=f.integer(4, "lost"))


_DECODERS: dict[int, Callable[[_Fields], Record]] = {
    TYPE_HEADER: _decode_header,
    TYPE_WRITE: lambda f: _decode_io(f, "out"),
    TYPE_READ: lambda f: _decode_io(f, "in"),
    TYPE_FD: _decode_fd,
    TYPE_LOST: _decode_lost,
    TYPE_END: _decode_end,
}
