"""Rotating a long recording through a series of capture files (`record -C/-G/-W`).

`RotatingWriter` stands where a CaptureWriter stands for `Recording`: it
owns one CaptureWriter at a time, each on its own file, and begins the next
file at a frame boundary once the current one has passed a size (-C) or an
age (-G); with a count (-W) only that many newest files are kept. Every
file is a whole capture: its own header (carrying the series id and the
file's index), end record and index. Event numbers come from the recording,
so they go on across files; `tick` says when a new file began, so the
recording names each descriptor again (an fd record) before its first use
in that file.

The files are opened and removed through callables the caller hands in
(the CLI gives the secure ones of capture/output_file.py), so this module
knows names and order, not permissions.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from wtrec.format import CaptureWriter
from wtrec.records import End, Header, IoEvent, Lost, Record, SeriesPart

SUFFIX = ".wtrace"


def series_path(path: str, index: int) -> str:
    """The name of file `index` of a series: run.wtrace -> run.000.wtrace, run.001.wtrace…

    A name not ending in .wtrace gets the number appended (run -> run.000).
    Numbers have at least three digits and grow past 999 (run.1000.wtrace).
    """
    number = f"{index:03d}"
    stem = path[:-len(SUFFIX)]
    if path.endswith(SUFFIX) and stem and not stem.endswith("/"):
        return f"{stem}.{number}{SUFFIX}"
    return f"{path}.{number}"


def new_series_id() -> str:
    """16 random hex digits: the id every file of one recording carries."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class RotationRule:
    """When to begin the next file, and how many files to keep (None: no limit)."""

    max_bytes: int | None = None  # -C: once the file has passed this many bytes
    every_ns: int | None = None  # -G: once the file is this old
    keep: int | None = None  # -W: the newest so many files stay, older ones are removed

    @property
    def rotates(self) -> bool:
        return self.max_bytes is not None or self.every_ns is not None


class SeriesFile(Protocol):
    """One file of the series as the opener gives it (capture/output_file.OutputFile)."""

    @property
    def path(self) -> str: ...

    @property
    def stream(self) -> BinaryIO: ...

    def close(self) -> None: ...

    def discard(self) -> None: ...

    def remove_finished(self) -> None: ...


class RotatingWriter:
    """A writer over a series of capture files; see the module docstring.

    `open_file(path)` creates one file of the series; for -W a finished
    one is removed by its own `remove_finished`. `clock` is the boot clock
    in nanoseconds (the time of end records and of -G).
    """

    def __init__(self, base_path: str, header: Header, rule: RotationRule, *,
                 open_file: Callable[[str], SeriesFile],
                 clock: Callable[[], int] = lambda: time.clock_gettime_ns(time.CLOCK_BOOTTIME),
                 series_id: str | None = None):
        self._base_path = base_path
        self._header = header
        self._rule = rule
        self._open_file = open_file
        self._clock = clock
        self.series_id = series_id or new_series_id()
        self.index = -1  # of the file being written
        self.removed: list[str] = []  # paths removed for -W, oldest first
        self._kept: deque[SeriesFile] = deque()  # finished files still there, oldest first
        self._file: SeriesFile | None = None
        self._writer: CaptureWriter | None = None
        self._started_ns = 0
        self._events = self._bytes = self._lost = 0  # of the file being written
        self._begin_next()

    @property
    def path(self) -> str:
        """The file being written (or the last one, once closed)."""
        return series_path(self._base_path, self.index)

    @property
    def files(self) -> int:
        """Files begun so far."""
        return self.index + 1

    def write(self, record: Record) -> None:
        assert self._writer is not None, "write after close"
        self._writer.write(record)
        if isinstance(record, IoEvent):
            self._events += 1
            self._bytes += len(record.data)
        elif isinstance(record, Lost):
            self._lost += record.count

    def write_event_rows(self, rows: list[tuple]) -> int:
        assert self._writer is not None, "write after close"
        data_bytes = self._writer.write_event_rows(rows)
        self._events += len(rows)
        self._bytes += data_bytes
        return data_bytes

    def write_event_table(self, table, first_seq: int) -> int:
        assert self._writer is not None, "write after close"
        data_bytes = self._writer.write_event_table(table, first_seq)
        self._events += len(table)
        self._bytes += data_bytes
        return data_bytes

    def process_ended(self, pid: int) -> None:
        if self._writer is not None:
            self._writer.process_ended(pid)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def tick(self) -> bool:
        """Ages the open frame; begins the next file when due. True if it did."""
        if self._writer is None:
            return False
        self._writer.tick()
        rule = self._rule
        now = self._clock()
        due = ((rule.max_bytes is not None and self._writer.bytes_written >= rule.max_bytes)
               or (rule.every_ns is not None and now - self._started_ns >= rule.every_ns))
        if not due:
            return False
        self._finish(now)
        self._begin_next()
        return True

    def close(self, end: End) -> None:
        """Closes the last file with an end record counting that file alone."""
        if self._writer is not None:
            self._finish(end.ts_ns)

    def abandon(self) -> None:
        """After a failure: closes the file being written, removed if nothing is in it yet."""
        if self._file is not None:
            file, self._file, self._writer = self._file, None, None
            try:
                file.discard()
            finally:
                file.close()

    def _finish(self, ts_ns: int) -> None:
        assert self._writer is not None and self._file is not None
        writer, file = self._writer, self._file
        self._writer = self._file = None
        try:
            writer.close(End(ts_ns=ts_ns, events=self._events, bytes=self._bytes,
                             lost=self._lost))
        finally:
            file.close()
        self._kept.append(file)

    def _begin_next(self) -> None:
        """Opens the next file, writes its header, then drops files past -W."""
        index = self.index + 1
        file = self._open_file(series_path(self._base_path, index))
        try:
            header = dataclasses.replace(self._header,
                                         series=SeriesPart(self.series_id, index))
            writer = CaptureWriter(file.stream, header)
        except BaseException:
            file.discard()
            file.close()
            raise
        self._file, self._writer, self.index = file, writer, index
        self._started_ns = self._clock()
        self._events = self._bytes = self._lost = 0
        keep = self._rule.keep
        while keep is not None and self._kept and len(self._kept) + 1 > keep:
            old = self._kept.popleft()
            old.remove_finished()
            self.removed.append(old.path)
