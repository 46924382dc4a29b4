"""The Python API: `wtrec.open(...)` gives a Capture to read in a notebook or a pipeline.

A Capture streams: each call to `events()` or `records()` reads the file
again from its start, one frame at a time, so a 10 GB capture never sits in
memory. Events come out as read-only `Event`s with their wall-clock time and
their file descriptor's identity resolved; `to_arrow()` and `to_pandas()`
turn them into columns when the optional extras are installed. Errors are
wtrec's own (wtrec.errors), the same the command line reports.
"""

from __future__ import annotations

import builtins
import itertools
import os
import re
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, BinaryIO

from wtrec.errors import FormatError, InputError, UsageError
from wtrec.format import CaptureReader, is_seekable
from wtrec.records import (
    LAYERS,
    End,
    FdIdentity,
    FdInfo,
    Header,
    IoEvent,
    PayloadSizes,
    Record,
    TlsInfo,
)
from wtrec.tools.fd_names import FdNames
from wtrec.tools.grep import frame_finder, payload_test
from wtrec.tools.info import CaptureInfo, inspect
from wtrec.tools.merge import one_series, series_index
from wtrec.tools.selection import Selection

if TYPE_CHECKING:
    import pandas
    import pyarrow

Source = str | os.PathLike | BinaryIO
Payload = bytes | re.Pattern[bytes]

DIRECTIONS = ("out", "in")


class TruncatedCaptureWarning(UserWarning):
    """A capture ended early (recorder killed, file cut): its whole records were read."""


@dataclass(frozen=True, slots=True)
class Event(PayloadSizes):
    """One traced syscall, read-only, with its time on both clocks and its fd resolved.

    `ts_ns` is the boot-clock time the kernel stamped, `wall_ns` the same
    instant on the wall clock (UTC nanoseconds). `count` is what the process
    asked for, `ret` what the syscall returned (None before format 1.1),
    `data` what was captured of it. `comm` is text as `show --json` gives
    it (bytes that are not UTF-8 as \\xNN; nothing else escaped: this is
    data, not terminal output). `identity` is what the descriptor was (tcp,
    unix, file…) when the capture knew, else None.
    """

    ts_ns: int
    wall_ns: int
    seq: int | None
    pid: int
    tid: int
    uid: int
    comm: str
    fd: int
    syscall: str
    direction: str
    count: int
    ret: int | None
    data: bytes = field(repr=False)
    identity: FdIdentity | None
    host: str  # the recording host, from the capture's header
    capture_start_ns: int  # when that recording started (wall clock)
    # record --tls (format 1.4): "tls" for a TLS library call, whose syscall
    # is the entry point (SSL_write...) and data the plaintext; `tls` says
    # which library and connection; a syscall made inside such a call (its
    # ciphertext) has the call's entry time in tls_call_ns.
    layer: str = "syscall"
    tls: TlsInfo | None = None
    tls_call_ns: int | None = None

    @property
    def library(self) -> str | None:
        """The TLS library family (openssl, gnutls, wolfssl) of a TLS-layer event."""
        return self.tls.library if self.tls else None

    @property
    def entry_point(self) -> str | None:
        """The TLS library function of a TLS-layer event (same as syscall there)."""
        return self.syscall if self.layer == "tls" else None

    @property
    def time(self) -> datetime:
        """The wall-clock time as an aware UTC datetime (microseconds; wall_ns keeps all)."""
        return datetime.fromtimestamp(self.wall_ns / 1e9, tz=timezone.utc)


def open(source: Source | Sequence[str | os.PathLike], *, warn: bool = True) -> Capture:
    """Opens a capture: a path, a binary file object, or a list of paths read as one series.

    The header is read at once, so a file that is not a capture fails here
    with FormatError; the events are read only when asked for. A file
    object that cannot seek (stdin, a pipe) gives one pass, read by the
    reader that read its header. With `warn=False` a capture that ends
    early raises no TruncatedCaptureWarning: the caller reads `truncated`
    and `warning` after the pass (the command line says it its own way).
    """
    return Capture(source, warn=warn)


class Capture:
    """A capture (or a series of them) to read as often as needed.

    Paths and seekable file objects are read again from the start by every
    `events()`/`records()`; a file object that cannot seek (a pipe) can be
    read once. A path is open only while a pass over it is under way; as a
    context manager (or with `close()`) the passes left unfinished close too.

    What the latest pass found is kept: `truncated`, `warning`, `end` and
    `event_count` (for a series, of the file that pass read last).
    """

    def __init__(self, source: Source | Sequence[str | os.PathLike], *, warn: bool = True):
        self._sources: list[Source] = _as_sources(source)
        self._warn = warn
        self._open_files: set[BinaryIO] = set()  # opened for a pass still under way
        self._read_once: set[int] = set()  # file objects read from once already
        # A file object's first reading, its header read: (reader, records from the header on)
        self._pending: dict[int, tuple[CaptureReader, Generator[Record, None, None]]] = {}
        self._latest: CaptureReader | None = None  # the reader of the latest pass
        self.headers: tuple[Header, ...] = tuple(self._read_header(s) for s in self._sources)
        if len(self._sources) > 1 and one_series(self.headers):
            # The files of one rotated recording are read in the order they
            # were written, whatever order a glob gave (run.1000 < run.101).
            order = sorted(range(len(self._sources)), key=lambda i: series_index(self.headers[i]))
            self._sources = [self._sources[i] for i in order]
            self.headers = tuple(self.headers[i] for i in order)

    @property
    def header(self) -> Header:
        """The header of the (first) capture: host, kernel, start time, what was traced."""
        return self.headers[0]

    @property
    def names(self) -> tuple[str, ...]:
        """The name of each file of the series, as given (or the file object's name)."""
        return tuple(_name(s) for s in self._sources)

    @property
    def truncated(self) -> bool:
        """Whether the latest pass found the capture ending early (cut, or no end record)."""
        return self._latest is not None and self._latest.truncated

    @property
    def warning(self) -> str | None:
        """The latest pass's "ends early" message, or None."""
        return None if self._latest is None else self._latest.warning

    @property
    def end(self) -> End | None:
        """The end record the latest pass read, if it reached one."""
        return None if self._latest is None else self._latest.end

    @property
    def event_count(self) -> int:
        """The events the latest pass read so far (all of them, whatever a filter kept)."""
        return 0 if self._latest is None else self._latest.events

    def records(self, *, payload: Payload | None = None) -> Iterator[Record]:
        """Every record in file order: header, events, fd, lost and end records.

        For a series, each file's records follow the previous file's, its
        own header first. With `payload` (bytes to find, or a compiled
        bytes regex) only the events whose data contains a match are
        handed on, and every other record; the search runs over each
        decompressed frame at once, so a rare needle costs about what
        decompression does. Events left out are still read, checked and
        counted (`event_count`).
        """
        keep = _payload_search(payload)
        if len(self._sources) == 1:  # one generator fewer per record on the common path
            return self._read(self._sources[0], keep)
        return itertools.chain.from_iterable(self._read(source, keep)
                                             for source in self._sources)

    def events(self, *, pid: int | Iterable[int] | None = None,
               comm: str | Iterable[str] | None = None,
               fd: int | Iterable[int] | None = None,
               direction: str | None = None,
               syscall: str | Iterable[str] | None = None,
               payload: Payload | None = None,
               layer: str | None = None) -> Iterator[Event]:
        """The events, filtered like the command line's --pid, --comm, --fd, --layer.

        A filter takes one value or several (any of them matches); `pid`
        matches a pid or a tid; `direction` is "out" (the write family) or
        "in" (the read family); `payload` keeps the events whose data
        contains a match (bytes, or a compiled bytes regex), as `wtrec grep`;
        `layer` is "tls" (TLS library calls, from record --tls) or "syscall".
        """
        if direction is not None and direction not in DIRECTIONS:
            raise UsageError(f"direction is 'out' or 'in', not {direction!r}")
        if layer is not None and layer not in LAYERS:
            raise UsageError(f"layer is 'tls' or 'syscall', not {layer!r}")
        selection = Selection(pids=_values(pid, int, "pid"), comms=_values(comm, str, "comm"),
                              fds=_values(fd, int, "fd"),
                              syscalls=_values(syscall, str, "syscall"),
                              layers=() if layer is None else (layer,))
        keep = _payload_search(payload)
        return self._iter_events(selection, direction, keep)  # bad filters fail here, not later

    def _iter_events(self, selection: Selection, direction: str | None,
                     keep: PayloadSearch | None) -> Iterator[Event]:
        for source, header in zip(self._sources, self.headers, strict=True):
            names = FdNames()  # each file of a series says what its descriptors are
            for event in names.events(self._read(source, keep)):
                if direction is not None and event.direction != direction:
                    continue
                if selection.matches(event):
                    yield as_event(event, header, names.get(event.pid, event.fd))

    def summaries(self) -> tuple[CaptureInfo, ...]:
        """What each file holds, as `wtrec info` prints it: totals per process and fd, loss, size.

        Read from a file's index when it has a sound one (a fraction of a
        second for any size), else from one pass over its records.
        """
        return tuple(self._summary(source) for source in self._sources)

    def to_arrow(self, **filters: Any) -> pyarrow.Table:
        """The events as a pyarrow Table (docs/PARQUET.md lists its columns).

        Takes the filters of `events()`. Needs the `parquet` extra
        (pip install 'wtrec[parquet]'); the whole table is in memory, so for
        big captures prefer `wtrec export --format parquet` and a query engine.
        """
        from wtrec.tools import parquet

        return parquet.events_table(self.events(**filters), self.header)

    def to_pandas(self, **filters: Any) -> pandas.DataFrame:
        """The events as a pandas DataFrame, one row per event; needs the `pandas` extra."""
        from wtrec.tools import parquet

        return parquet.events_frame(self.events(**filters), self.header)

    def close(self) -> None:
        """Closes the files passes under way opened (never a file object it was handed)."""
        for stream in list(self._open_files):
            stream.close()
        self._open_files.clear()
        self._pending.clear()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def __repr__(self) -> str:
        names = ", ".join(self.names)
        return f"<wtrec.Capture {names} host={self.header.host!r}>"

    def _read_header(self, source: Source) -> Header:
        """Reads the header; a file object's reading is kept for the first pass."""
        stream = self._stream(source)
        reader = CaptureReader(stream)
        records = iter(reader)
        try:
            first = next(records, None)
            if reader.header is None or first is None:
                raise FormatError("the capture ends before its header record")
        except BaseException:
            self._done(source, stream)
            raise
        if isinstance(source, (str, os.PathLike)):
            self._done(source, stream)
        else:
            self._pending[id(source)] = (reader, _prepend(first, records))
        return reader.header

    def _summary(self, source: Source) -> CaptureInfo:
        pending = self._pending.pop(id(source), None)
        if pending is not None:
            reader, records = pending
            if not is_seekable(source):  # a pipe: its header is read, the rest follows once
                next(records, None)
                self._latest = reader
                return inspect(_name(source), None, started=(reader, records))
            records.close()  # stops its read-ahead before the file is rewound for the index
        stream = self._stream(source)
        try:
            return inspect(_name(source), stream)
        finally:
            self._done(source, stream)

    def _read(self, source: Source, keep: PayloadSearch | None = None) -> Iterator[Record]:
        pending = self._pending.pop(id(source), None)
        stream = None
        if pending is None:
            stream = self._stream(source)
            reader = (CaptureReader(stream) if keep is None else
                      CaptureReader(stream, keep=keep.test, find_in_frame=keep.find_in_frame))
            records: Iterator[Record] = iter(reader)
        else:
            # A pipe's first frame was decoded with its header: what follows
            # is searched frame by frame, and these first events one by one.
            reader, records = pending
            if keep is not None:
                reader.search_payloads(keep.test, keep.find_in_frame)
                records = _matching(records, keep.test)
        self._latest = reader
        try:
            yield from records
        finally:
            if stream is not None:
                self._done(source, stream)
        if reader.warning and self._warn:
            warnings.warn(f"{_name(source)}: {reader.warning}", TruncatedCaptureWarning,
                          stacklevel=3)

    def _stream(self, source: Source) -> BinaryIO:
        """The source ready to read from its start; a path is opened for this pass."""
        if isinstance(source, (str, os.PathLike)):
            stream = _open_path(source)
            self._open_files.add(stream)
            return stream
        if id(source) in self._read_once:
            try:
                source.seek(0)
            except (OSError, ValueError, AttributeError):
                raise UsageError(f"{_name(source)} cannot seek, so it can be read once only; "
                                 "open a path instead") from None
        self._read_once.add(id(source))
        return source

    def _done(self, source: Source, stream: BinaryIO) -> None:
        """Closes a file this Capture opened for one pass."""
        if stream in self._open_files:
            self._open_files.discard(stream)
            stream.close()


@dataclass(frozen=True)
class PayloadSearch:
    """How a payload filter is run: per payload, where a search of the whole frame's bytes says."""

    test: Callable[[bytes], object]
    find_in_frame: Callable[[bytes, int], int] | None


def _payload_search(payload: Payload | None) -> PayloadSearch | None:
    if payload is None:
        return None
    if isinstance(payload, (bytes, bytearray)):
        pattern = re.compile(re.escape(bytes(payload)))
    elif isinstance(payload, re.Pattern) and isinstance(payload.pattern, bytes):
        pattern = payload
    else:
        raise UsageError(f"payload takes bytes or a compiled bytes regex, not {payload!r}")
    return PayloadSearch(payload_test(pattern), frame_finder(pattern))


def _prepend(first: Record, rest: Iterator[Record]) -> Generator[Record, None, None]:
    """`first`, then `rest`; closing it closes `rest` (and a reader's read-ahead)."""
    try:
        yield first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()


def _matching(records: Iterator[Record], test: Callable[[bytes], object]) -> Iterator[Record]:
    for record in records:
        if not isinstance(record, IoEvent) or test(record.data):
            yield record


def as_event(event: IoEvent, header: Header, identity: FdIdentity | None) -> Event:
    """The API's view of a reader's event, given its capture's header and its fd's identity."""
    return Event(ts_ns=event.ts_ns, wall_ns=header.wall_ns(event.ts_ns), seq=event.seq,
                 pid=event.pid, tid=event.tid, uid=event.uid,
                 comm=event.comm.decode("utf-8", "backslashreplace"), fd=event.fd,
                 syscall=event.syscall, direction=event.direction, count=event.count,
                 ret=event.ret, data=event.data, identity=identity, host=header.host,
                 capture_start_ns=header.start_ns, layer=event.layer, tls=event.tls,
                 tls_call_ns=event.tls_call_ns)


def _as_sources(source: object) -> list[Source]:
    if isinstance(source, (str, os.PathLike)) or hasattr(source, "read"):
        return [source]  # type: ignore[list-item]
    if isinstance(source, Sequence) and source and all(
            isinstance(item, (str, os.PathLike)) for item in source):
        return list(source)
    raise UsageError("wtrec.open takes a path, a binary file object or a list of paths, "
                     f"not {type(source).__name__}")


def _open_path(path: str | os.PathLike) -> BinaryIO:
    """The file opened for reading; a missing file or a directory is an InputError."""
    name = os.fspath(path)
    if os.path.isdir(name):
        raise InputError(f"cannot read {name}: it is a directory")
    try:
        return builtins.open(name, "rb")  # closed when its pass ends
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror}") from None


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(os.fspath(source))
    return str(getattr(source, "name", "<stream>"))


def _values(value: object, kind: type, what: str) -> tuple:
    """A filter argument as a tuple: one value, several, or None for all."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, (str, int)) else tuple(value)  # type: ignore[arg-type]
    for item in items:
        if not isinstance(item, kind) or isinstance(item, bool):
            raise UsageError(f"{what} takes {kind.__name__} values, not {item!r}")
    return items


__all__ = ["Capture", "CaptureInfo", "Event", "FdIdentity", "FdInfo", "TruncatedCaptureWarning", "open"]
