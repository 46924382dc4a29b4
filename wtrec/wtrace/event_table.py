"""Events as columns: the recorder's fast lane from the kernel's bytes to msgpack.

Under load the ring buffer holds long runs of same-sized event records.
Turning each into a Python tuple, summing it into the index totals and
packing it one by one cost about a microsecond per event, more than a
core can give at a million events a second. An `EventTable` keeps such
events as numpy columns (one structured array) and their payloads as one
byte array, from the kernel's bytes (`plain_run`) to the file:

- time order: a C sort of the ts column (`in_time_order`, `joined`);
- the index totals of a stretch: grouped sums by (pid, fd, direction)
  (`totals`), what StatsAccumulator.add_rows computes row by row;
- the msgpack bytes (`pack`): records of one shape (syscall, comm,
  payload length, one msgpack form per int field) laid out as one
  structured array; records of a few shapes (a server's reads and writes)
  each shape's fields side by side with the payloads, the bytes that are
  records taken by a mask; anything else as rows, by msgpack. The bytes
  are always exactly what packing the rows gives (tests compare them), so
  the format does not change.

numpy is imported here only, and only `record` imports this module: the
offline commands do not pay for numpy's import.
"""

from __future__ import annotations

import signal
import struct
from collections.abc import Mapping, Sequence
from itertools import accumulate
from operator import getitem, itemgetter

import msgpack

from wtrec.records import TYPE_READ, TYPE_WRITE

# numpy's BLAS starts worker threads when it is imported. A process-directed
# signal goes to any thread that does not block it, and Python then raises in
# the main thread, so a Ctrl-C could interrupt the recorder inside a block that
# holds the stop signals (capture/output_file.py's signals_held, which blocks
# them for the calling thread only) and leave the `.NAME.….tmp` beside a
# capture it was replacing (seen in CI). Started with the signals blocked, the
# threads keep them blocked for good, and the main thread alone takes them.
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}
_before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
try:
    import numpy as np
finally:
    signal.pthread_sigmask(signal.SIG_SETMASK, _before)

# What a table keeps of each event: the fields of the format's event record
# (docs/FORMAT.md) but its data and seq, plus the payload's length and the
# decoder's arrival number (the row's ROW_SEQ, see wtrec.records).
# Laid out in 8-byte words: a table is moved (sorted, joined) as a plain
# array of words, much faster than numpy moves a structured one; word 4 is
# the (pid, fd) key; words 6 to 8 hold what one shape of record shares.
_COLUMN_LAYOUT = (
    ("ts", "<u8", 0), ("count", "<u8", 8), ("ret", "<i8", 16), ("arrival", "<u8", 24),
    ("pid", "<u4", 32), ("fd", "<i4", 36), ("tid", "<u4", 40), ("uid", "<u4", 44),
    ("captured", "<u4", 48), ("syscall", "<u2", 52), ("direction", "<u2", 54),
    ("comm", "S16", 56))
COLUMNS = np.dtype({"names": [name for name, _kind, _at in _COLUMN_LAYOUT],
                    "formats": [kind for _name, kind, _at in _COLUMN_LAYOUT],
                    "offsets": [at for _name, _kind, at in _COLUMN_LAYOUT], "itemsize": 72})
_WORDS = COLUMNS.itemsize // 8
_KEY_WORD = 4  # pid | fd << 32
_SHAPE_WORDS = slice(6, 9)  # captured, syscall, direction, comm
# The 8-byte word each int field of a record is in.
_WORD_OF = {name: at // 8 for name, _kind, at in _COLUMN_LAYOUT}
# Fields copied from the kernel's records, by name (see plain_run).
KERNEL_FIELDS = ("ts", "pid", "tid", "uid", "fd", "count", "ret", "syscall", "direction",
                 "captured", "comm")
_KERNEL_CODES = {"ts": "<u8", "pid": "<u4", "tid": "<u4", "uid": "<u4", "fd": "<i4",
                 "count": "<u8", "ret": "<i8", "syscall": "<u2", "direction": "<u2",
                 "captured": "<u4", "comm": "S16",
                 # what a run is checked with (plain_run): the ring's length word, the kind, flags
                 "length": "<u4", "kind": "<u4", "flags": "<u4"}
# Sums of a stretch are made in int64: values up to this keep them exact
# (FRAME_MAX_RECORDS of them); a larger count falls back to Python ints.
_EXACT_SUM_LIMIT = 1 << 52
_ROW_TYPES = (TYPE_WRITE, TYPE_READ)  # by direction
_KERNEL_RECORDS: dict[tuple, np.dtype] = {}  # (stride, field offsets) -> a kernel record
_PACKER = msgpack.Packer(use_bin_type=True)
_FIRST = itemgetter(0)
# Where msgpack's int forms begin (int64, int32... negative; fixint, uint8...):
# a value's form is how many of these are at or below it.
_FORM_EDGES = np.array([-(1 << 31), -(1 << 15), -(1 << 7), -32, 0x80, 1 << 8, 1 << 16, 1 << 32],
                       np.int64)
_UNSIGNED_EDGES = np.array([0x80, 1 << 8, 1 << 16, 1 << 32], np.uint64)
_FIRST_UNSIGNED_FORM = 4  # fixint: the form of 0 in _FORM_EDGES' numbering
_FORMS = len(_FORM_EDGES) + 1
MAX_SHAPES = 16  # more shapes in one stretch: packed row by row by msgpack
_LENGTH_MASKS: dict[int, np.ndarray] = {}  # payload room -> _first_of_each_length
# Record layouts seen (_RecordLayout.records): a few per recording.
_LAYOUTS: dict[tuple, np.dtype] = {}
MAX_LAYOUTS = 256


def _int_class(value: int) -> tuple[bytes, int]:
    """msgpack's shortest form of an int: its type byte (none for a fixint) and how many
    value bytes follow it (a fixint's value is its one byte)."""
    if value >= 0:
        if value < 0x80:
            return b"", 1
        for marker, width in ((b"\xcc", 1), (b"\xcd", 2), (b"\xce", 4)):
            if value < 1 << (8 * width):
                return marker, width
        return b"\xcf", 8
    if value >= -32:
        return b"", 1
    for marker, width in ((b"\xd0", 1), (b"\xd1", 2), (b"\xd2", 4)):
        if value >= -(1 << (8 * width - 1)):
            return marker, width
    return b"\xd3", 8


class EventTable:
    """Plain events (no flags, data inline) as columns, in the order given.

    `columns` is a COLUMNS array; `payloads` a (events, room) array of bytes
    whose row i starts with event i's data (its `captured` bytes; the rest
    is whatever the kernel's record held there, never written anywhere);
    `syscall_names` maps the syscall column to the names the file holds.
    Payloads live in one array, not as bytes objects: under load those are
    scattered over the heap, and touching each again costs a cache miss.
    """

    __slots__ = ("columns", "payloads", "syscall_names")

    def __init__(self, columns: np.ndarray, payloads: np.ndarray,
                 syscall_names: Mapping[int, str]):
        self.columns = columns
        self.payloads = payloads
        self.syscall_names = syscall_names

    @classmethod
    def plain_run(cls, buffer, most: int, stride: int, field_offsets: Mapping[str, int],
                  length_word: int, event_kind: int, data_at: int, room: int,
                  first_arrival: int, syscall_names: Mapping[int, str], least: int
                  ) -> EventTable | None:
        """The run of plain event records at the start of `buffer`, at most `most`: those
        whose ring length word is `length_word`, kind `event_kind` and flags 0. None when
        fewer than `least`, or when one says more data than its `room` or a direction
        that is neither 0 nor 1 (record by record, the decoder says what is wrong with
        it). `field_offsets` places each of KERNEL_FIELDS, "length", "kind" and "flags"
        in a record; its data runs from `data_at` to the record's end."""
        records = _kernel_records(buffer, most, stride, field_offsets)
        plain = ((records["length"] == length_word) & (records["kind"] == event_kind)
                 & (records["flags"] == 0))
        count = most if bool(plain.all()) else int(np.argmin(plain))
        if count < least:
            return None
        records = records[:count]
        if (int(records["captured"].max()) > room
                or int(records["direction"].max()) > 1):
            return None
        return cls._of_records(records, buffer, stride, data_at, first_arrival, syscall_names)

    @classmethod
    def _of_records(cls, records: np.ndarray, buffer, stride: int, data_at: int,
                    first_arrival: int, syscall_names: Mapping[int, str]) -> EventTable:
        count = len(records)
        columns = np.empty(count, COLUMNS)
        for name in KERNEL_FIELDS:
            columns[name] = records[name]
        columns["arrival"] = np.arange(first_arrival, first_arrival + count, dtype=np.uint64)
        payloads = np.frombuffer(buffer, np.uint8, count * stride).reshape(count, stride)
        return cls(columns, payloads[:, data_at:].copy(), syscall_names)

    def syscalls(self) -> list[int]:
        """The distinct syscall numbers of the events."""
        numbers = self.columns["syscall"]
        if not len(numbers) or bool((numbers == numbers[0]).all()):
            return numbers[:1].tolist()
        return np.unique(numbers).tolist()

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def times(self) -> np.ndarray:
        return self.columns["ts"]

    @property
    def first_time(self) -> int:
        return int(self.columns["ts"][0])

    @property
    def last_time(self) -> int:
        return int(self.columns["ts"][-1])

    def count_until(self, ts_ns: int) -> int:
        """How many leading events are dated `ts_ns` or earlier (the table in time order)."""
        return int(np.searchsorted(self.columns["ts"], ts_ns, side="right"))

    def positions_after(self, times: Sequence[int]) -> list[int]:
        """For each time, how many leading events are dated then or earlier."""
        return np.searchsorted(self.columns["ts"], np.asarray(times, dtype=np.uint64),
                               side="right").tolist()

    def part(self, start: int, stop: int | None = None) -> EventTable:
        return EventTable(self.columns[start:stop], self.payloads[start:stop],
                          self.syscall_names)

    def taken(self, order: np.ndarray) -> EventTable:
        """The events in the order of the positions `order`."""
        return EventTable(_from_words(_words(self.columns)[order]), self.payloads[order],
                          self.syscall_names)

    def in_time_order(self) -> EventTable:
        """This table sorted by time; events of equal times keep their order."""
        times = self.columns["ts"]
        if len(times) < 2 or bool((times[1:] >= times[:-1]).all()):
            return self
        return self.taken(np.argsort(times, kind="stable"))

    @staticmethod
    def joined(tables: Sequence[EventTable]) -> EventTable:
        """The tables one after the other."""
        if len(tables) == 1:
            return tables[0]
        room = max(table.payloads.shape[1] for table in tables)
        payloads = np.empty((sum(map(len, tables)), room), np.uint8)
        at = 0
        for table in tables:  # a narrower table's rows are filled on the left
            payloads[at:at + len(table), :table.payloads.shape[1]] = table.payloads
            at += len(table)
        return EventTable(_from_words(np.concatenate([_words(table.columns) for table in tables])),
                          payloads, tables[0].syscall_names)

    def first_of(self, pid: int, fd: int) -> int:
        """Where the first event of (pid, fd) is; len(self) if none."""
        hits = np.flatnonzero((self.columns["pid"] == pid) & (self.columns["fd"] == fd))
        return int(hits[0]) if len(hits) else len(self)

    def span(self) -> tuple[int, int, int]:
        """How many events, and the first and last of their times."""
        times = self.columns["ts"]
        return len(times), int(times.min()), int(times.max())

    def data_bytes(self) -> int:
        return int(self.columns["captured"].sum(dtype=np.int64))

    def rows(self, first_seq: int | None = None) -> list[tuple]:
        """The events as rows (wtrec.records.EventRow), numbered from `first_seq` or, if
        None, with their arrival numbers."""
        columns, count = self.columns, len(self)
        names = self.syscall_names
        return list(zip(  # noqa: B905
            map(_ROW_TYPES.__getitem__, columns["direction"].tolist()), columns["ts"].tolist(),
            columns["pid"].tolist(), columns["tid"].tolist(), columns["uid"].tolist(),
            columns["comm"].tolist(), columns["fd"].tolist(), columns["count"].tolist(),
            self._data(), map(names.__getitem__, columns["syscall"].tolist()),
            columns["ret"].tolist(),
            columns["arrival"].tolist() if first_seq is None
            else range(first_seq, first_seq + count)))

    def _data(self) -> list[bytes]:
        """The payloads as bytes objects."""
        count, room = self.payloads.shape
        if not room:
            return [b""] * count
        whole = list(map(_FIRST, struct.iter_unpack(f"{room}s", self.payloads.tobytes())))
        captured = self.columns["captured"].tolist()
        if captured.count(room) == count:
            return whole
        return list(map(getitem, whole, map(slice, captured)))

    def pack(self, first_seq: int) -> PackedEvents:
        """The events as the format's records, numbered from `first_seq`: byte for byte
        what packing each of `rows(first_seq)` gives."""
        layout = self._pack_columns(first_seq)
        if layout is not None:
            return PackedEvents(*layout)
        shaped = self._pack_shapes(first_seq)
        if shaped is not None:
            return shaped
        return PackedEvents(list(map(_PACKER.pack, self.rows(first_seq))), 0)

    def _pack_shapes(self, first_seq: int) -> PackedEvents | None:
        """The records of a few shapes (reads and writes, a few payload sizes): each
        shape's heads (the fields before the data) and tails (after it) laid out as in
        _pack_columns, then heads, payloads and tails side by side in one array whose
        used bytes, taken row by row by a mask, are the records in order. None if
        there are more than MAX_SHAPES shapes."""
        columns, count = self.columns, len(self)
        captured = columns["captured"]
        if not count:
            return None
        room = int(captured.max())  # of the payloads' room, what any event uses
        if room >= 1 << 16:
            return None
        payloads = self.payloads[:, :room]
        words = _words(columns)
        # What a shape shares: syscall and direction (the high half of word 6),
        # comm, the bin header's form, and the form of each int field.
        key = np.unique((words[:, 6] >> np.uint64(32)) * np.uint64(2) + (captured >= 1 << 8),
                        return_inverse=True)[1].reshape(-1).astype(np.int64)
        comms = words[:, 7:9]
        if not bool((comms == comms[0]).all()):
            names = np.unique(columns["comm"], return_inverse=True)[1].reshape(-1)
            key = key * (int(names.max()) + 1) + names
        # An int field is a constant, or of one form throughout (msgpack's forms
        # follow the value, so the least and the greatest value say it), or its
        # forms go into the key.
        fields: dict[str, np.ndarray] = {
            name: columns[name] for name in ("ts", "pid", "tid", "uid", "fd", "count", "ret")}
        fields["seq"] = np.arange(first_seq, first_seq + count, dtype=np.int64)
        constant: dict[str, int] = {}
        for name, column in fields.items():
            low, high = ((first_seq, first_seq + count - 1) if name == "seq"
                         else (int(column.min()), int(column.max())))
            if low == high:
                constant[name] = low
            elif _int_class(low) != _int_class(high):
                key = key * _FORMS + _int_forms(column)
        shapes, shape_of = np.unique(key, return_inverse=True)
        if len(shapes) > MAX_SHAPES:
            return None
        shape_of = shape_of.reshape(-1)
        heads, tails = [], []
        for shape in range(len(shapes)):
            at = np.flatnonzero(shape_of == shape)
            first = columns[at[0]]
            head, tail = _RecordLayout(), _RecordLayout()
            head.constant(b"\x9c" + _PACKER.pack(_ROW_TYPES[int(first["direction"])]))
            for name in ("ts", "pid", "tid", "uid"):
                head.integer_of(fields[name], at, constant.get(name))
            head.constant(_PACKER.pack(bytes(first["comm"])))
            for name in ("fd", "count"):
                head.integer_of(fields[name], at, constant.get(name))
            head.constant(b"\xc4" if int(first["captured"]) < 1 << 8 else b"\xc5")
            head.length(captured[at])
            tail.constant(_PACKER.pack(self.syscall_names[int(first["syscall"])]))
            for name in ("ret", "seq"):
                tail.integer_of(fields[name], at, constant.get(name))
            heads.append((at, head.matrix(len(at))))
            tails.append((at, tail.matrix(len(at))))
        widest_head = max(matrix.shape[1] for _at, matrix in heads)
        widest_tail = max(matrix.shape[1] for _at, matrix in tails)
        data_at, tail_at = widest_head, widest_head + room
        side_by_side = np.empty((count, tail_at + widest_tail), np.uint8)
        for (at, head_matrix), (_at, tail_matrix) in zip(heads, tails):  # noqa: B905
            side_by_side[at, :head_matrix.shape[1]] = head_matrix
            side_by_side[at, tail_at:tail_at + tail_matrix.shape[1]] = tail_matrix
        side_by_side[:, data_at:tail_at] = payloads
        # Which bytes of each row are the record's: a few row patterns, taken by
        # index (numpy's take is much faster than comparing anew per row).
        head_sizes = np.array([matrix.shape[1] for _at, matrix in heads])
        tail_sizes = np.array([matrix.shape[1] for _at, matrix in tails])
        used = np.empty(side_by_side.shape, bool)
        used[:, :data_at] = (np.arange(widest_head) < head_sizes[:, None]).take(shape_of, axis=0)
        used[:, data_at:tail_at] = _first_of_each_length(self.payloads.shape[1])[:, :room].take(
            captured.astype(np.intp), axis=0)
        used[:, tail_at:] = (np.arange(widest_tail) < tail_sizes[:, None]).take(shape_of, axis=0)
        ends = np.cumsum((head_sizes + tail_sizes).take(shape_of) + captured)
        return PackedEvents(side_by_side[used].tobytes(), 0, ends)

    def _pack_columns(self, first_seq: int) -> tuple[bytes, int] | None:
        """The records laid out as one structured array when all have one shape; else None.

        Every record then has the same bytes but for some int fields of one
        width (ts, seq, often pid, fd) and the payload: the constant bytes are
        copied from a template, each varying field is one big-endian column
        assignment, the payloads one copy.
        """
        columns, count = self.columns, len(self)
        if count < 2:
            return None
        words = _words(columns)
        same = (words == words[0]).all(axis=0).tolist()
        if not all(same[_SHAPE_WORDS]):
            return None
        first = columns[0]
        length = int(first["captured"])
        if length >= 1 << 16:
            return None  # bin32: rare, and big enough that msgpack's cost does not matter
        layout = _RecordLayout()

        def bounds(name: str) -> tuple[int, int]:
            column = columns[name]
            if same[_WORD_OF[name]]:
                return int(column[0]), int(column[0])
            return int(column.min()), int(column.max())

        layout.constant(b"\x9c" + _PACKER.pack(_ROW_TYPES[int(first["direction"])]))
        for name in ("ts", "pid", "tid", "uid"):
            if not layout.integer(columns[name], *bounds(name)):
                return None
        layout.constant(_PACKER.pack(bytes(first["comm"])))
        for name in ("fd", "count"):
            if not layout.integer(columns[name], *bounds(name)):
                return None
        layout.constant(_bin_header(length))
        layout.payload(length)
        layout.constant(_PACKER.pack(self.syscall_names[int(first["syscall"])]))
        seq = np.arange(first_seq, first_seq + count, dtype=np.int64)
        if not (layout.integer(columns["ret"], *bounds("ret"))
                and layout.integer(seq, first_seq, first_seq + count - 1)):
            return None
        return layout.records(self.payloads, count), layout.size

    def totals(self) -> list[tuple] | None:
        """The index totals of these events by (pid, fd, direction), in the order each
        key first appears: (pid, fd, inbound, events, captured, expected, truncated,
        failed, first ts, last ts, comm of its last event); None if a value is too large
        for exact int64 sums (then the rows way counts them)."""
        columns, count = self.columns, len(self)
        if not count:
            return []
        counts = columns["count"]
        if int(counts.max()) >= _EXACT_SUM_LIMIT:
            return None
        inbound = columns["direction"] != 0
        # pid < 2**22 (the kernel's PID_MAX_LIMIT), so bit 31 is free for the direction.
        keys = _words(columns)[:, _KEY_WORD] | (inbound.astype(np.uint64) << np.uint64(31))
        if bool((keys == keys[0]).all()):
            order, starts = np.arange(count), np.zeros(1, np.intp)
        else:
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
        ends = np.append(starts[1:], count)
        captured = columns["captured"].astype(np.int64)
        ret = columns["ret"]
        # As IoEvent.expected: bytes asked for (out) or received (in).
        expected = np.where(inbound, np.maximum(ret, 0), counts.astype(np.int64))
        counted = np.stack((captured, expected, captured < expected, ret < 0), axis=1)
        sums = np.add.reduceat(counted[order], starts, axis=0)
        times = columns["ts"][order]
        first_at, last_at = order[starts], order[ends - 1]
        groups = list(zip(  # noqa: B905
            columns["pid"][first_at].tolist(), columns["fd"][first_at].tolist(),
            inbound[first_at].tolist(), (ends - starts).tolist(), *sums.T.tolist(),
            np.minimum.reduceat(times, starts).tolist(),
            np.maximum.reduceat(times, starts).tolist(), columns["comm"][last_at].tolist()))
        if len(groups) == 1:
            return groups
        return list(map(groups.__getitem__, np.argsort(first_at, kind="stable").tolist()))

    def fd_keys(self) -> list[tuple[int, int]]:
        """The distinct (pid, fd) of the events."""
        keys = _words(self.columns)[:, _KEY_WORD]
        if not len(keys):
            return []
        distinct = ([int(keys[0])] if bool((keys == keys[0]).all())
                    else np.unique(np.ascontiguousarray(keys)).tolist())
        return [(key & 0xFFFFFFFF, (key >> 32) - ((key >> 31) & 0x100000000)) for key in distinct]


class PackedEvents:
    """Packed records, cut where the writer wants: one bytes object of same-sized
    records (`record_size`), or a list of records (record_size 0)."""

    def __init__(self, packed: bytes | list[bytes], record_size: int,
                 ends: np.ndarray | None = None):
        self._whole = packed if isinstance(packed, bytes) else b""
        self._records = packed if isinstance(packed, list) else []
        self._record_size = record_size
        # Where each record starts, and the last one ends: given (as the records'
        # ends) with the whole bytes of records of several sizes, or made from
        # the list on first use.
        self._ends: np.ndarray | None = (None if ends is None
                                         else np.concatenate(([0], ends)).astype(np.int64))

    def taken(self, start: int, most: int, budget: int) -> int:
        """How many records from `start`, at most `most`, until their size reaches
        `budget` (the record that reaches it included)."""
        if budget <= 0:
            return min(most, 1)
        if self._record_size:
            return min(most, -(-budget // self._record_size))
        ends = self._record_ends()
        reached = int(np.searchsorted(ends, ends[start] + budget, side="left"))
        return min(most, max(reached, start + 1) - start)

    def between(self, start: int, stop: int) -> bytes | memoryview:
        if self._record_size:
            size = self._record_size
            return memoryview(self._whole)[start * size:stop * size]
        if self._records:
            return b"".join(self._records[start:stop])
        ends = self._record_ends()
        return memoryview(self._whole)[int(ends[start]):int(ends[stop])]

    def _record_ends(self) -> np.ndarray:
        if self._ends is None:
            self._ends = np.fromiter(accumulate(map(len, self._records), initial=0), np.int64,
                                     len(self._records) + 1)
        return self._ends


class _RecordLayout:
    """The fields of a run of same-shaped records (_pack_columns, _pack_shapes): a template
    of the bytes every record shares, and a field per record for each varying column."""

    def __init__(self):
        self._template = bytearray()
        self._fields: list[tuple[str, object, int]] = []  # (name, numpy type, offset)
        self._columns: dict[str, np.ndarray] = {}

    def constant(self, piece: bytes) -> None:
        self._template += piece

    def integer(self, column: np.ndarray, low: int, high: int) -> bool:
        """Adds an int column whose least and greatest values are `low` and `high`; False
        if its values do not share one shortest form."""
        if low == high:
            self._template += _PACKER.pack(low)
            return True
        if _int_class(low) != _int_class(high):
            return False
        self._field(column, low)
        return True

    def integer_of(self, column: np.ndarray, at: np.ndarray, value: int | None) -> None:
        """Adds the int column's values at positions `at`, all of one form (the first
        one's); `value`: the one value the whole column holds, if so."""
        if value is not None:
            self._template += _PACKER.pack(value)
        else:
            self._field(column[at], int(column[at[0]]))

    def _field(self, column: np.ndarray, example: int) -> None:
        """A field per record for an int column whose values all take `example`'s form."""
        marker, width = _int_class(example)
        self._template += marker
        name = f"f{len(self._fields)}"
        # A negative value's bytes are its two's complement, as msgpack writes them;
        # a fixint (-32 to 127) is one signed byte.
        signed = not marker or marker[0] >= 0xD0
        self._fields.append((name, f">{'i' if signed else 'u'}{width}", len(self._template)))
        self._columns[name] = column
        self._template += bytes(width)

    def length(self, lengths: np.ndarray) -> None:
        """A bin's length after its type byte (bin8 or bin16, as the type byte says)."""
        low, high = int(lengths.min()), int(lengths.max())
        width = 1 if high < 1 << 8 else 2
        if low == high:
            self._template += high.to_bytes(width, "big")
            return
        name = f"f{len(self._fields)}"
        self._fields.append((name, f">u{width}", len(self._template)))
        self._columns[name] = lengths
        self._template += bytes(width)

    def matrix(self, count: int) -> np.ndarray:
        """The records (without payload) as a (count, size) array of bytes."""
        return self.structured(count).view(np.uint8).reshape(count, len(self._template))

    def payload(self, length: int) -> None:
        if length:
            self._fields.append(("data", (np.uint8, (length,)), len(self._template)))
            self._template += bytes(length)

    @property
    def size(self) -> int:
        return len(self._template)

    def records(self, payloads: np.ndarray, count: int) -> bytes:
        out = self.structured(count)
        if "data" in (out.dtype.names or ()):
            out["data"] = payloads[:, :out.dtype["data"].shape[0]]
        return out.tobytes()

    def structured(self, count: int) -> np.ndarray:
        """`count` records: the template, then each varying column in its field."""
        size = len(self._template)
        key = (tuple(self._fields), size)
        kinds = _LAYOUTS.get(key)
        if kinds is None:
            if len(_LAYOUTS) >= MAX_LAYOUTS:
                _LAYOUTS.clear()
            kinds = _LAYOUTS[key] = np.dtype({
                "names": [name for name, _type, _at in self._fields],
                "formats": [kind for _name, kind, _at in self._fields],
                "offsets": [at for _name, _kind, at in self._fields], "itemsize": size})
        out = np.empty(count, kinds)
        out.view(np.uint8).reshape(count, size)[:] = np.frombuffer(self._template, np.uint8)
        for name, column in self._columns.items():
            out[name] = column
        return out


def _kernel_records(buffer, count: int, stride: int,
                    field_offsets: Mapping[str, int]) -> np.ndarray:
    """`count` kernel records of `stride` bytes as a structured array, the same memory."""
    key = (stride, tuple(field_offsets.items()))
    kernel = _KERNEL_RECORDS.get(key)
    if kernel is None:
        kernel = _KERNEL_RECORDS[key] = np.dtype({
            "names": list(field_offsets),
            "formats": [_KERNEL_CODES[name] for name in field_offsets],
            "offsets": list(field_offsets.values()), "itemsize": stride})
    return np.frombuffer(buffer, dtype=kernel, count=count)


def _first_of_each_length(room: int) -> np.ndarray:
    """(room + 1, room) booleans: row n has its first n True (one array per payload room
    of the kernel's size classes: a few)."""
    rows = _LENGTH_MASKS.get(room)
    if rows is None:
        rows = _LENGTH_MASKS[room] = np.arange(room + 1)[:, None] > np.arange(room)
    return rows


def _int_forms(column: np.ndarray) -> np.ndarray:
    """Which of msgpack's int forms (_int_class) each value takes, as a number below
    _FORMS (an unsigned column's forms are the non-negative ones)."""
    if column.dtype.kind == "u":
        return np.searchsorted(_UNSIGNED_EDGES, column, side="right") + _FIRST_UNSIGNED_FORM
    return np.searchsorted(_FORM_EDGES, column.astype(np.int64), side="right")


def _words(columns: np.ndarray) -> np.ndarray:
    """A table's columns as a (records, 8-byte words) array, the same memory."""
    return np.ascontiguousarray(columns).view(np.uint64).reshape(len(columns), _WORDS)


def _from_words(words: np.ndarray) -> np.ndarray:
    return words.reshape(-1).view(COLUMNS)


def _bin_header(length: int) -> bytes:
    """msgpack's header of a bin of `length` bytes (bin8 or bin16)."""
    if length < 1 << 8:
        return bytes((0xC4, length))
    return b"\xc5" + length.to_bytes(2, "big")

