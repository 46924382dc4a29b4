"""Progress bars for long offline work (grep, filter, export, merge, recover): the only rich user.

The rule (README.md): a bar is drawn on stderr only when stderr is a
terminal, TERM is not "dumb", WTREC_NO_PROGRESS is unset or empty, and
stdout is not a terminal the command prints data on while it reads. So a
pipe, a redirection or CI never sees a byte of it. The bar is transient:
it is erased when the work ends or is interrupted, before the command's
one-line summary. It appears only after a quarter of a second, so a quick
command never flickers.

Progress is input bytes consumed, counted by a thin wrapper around the
input stream (one addition per read call, i.e. per frame, never per
event) and polled ten times a second by one thread of our own, which also
draws; rich's own refresh thread is not used. A regular file shows a bar,
bytes read of its size, the rate and the time left; a pipe shows bytes
read and the rate. rich is imported only when a bar is to be drawn.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from wtrec.tools.render import escape_text

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

SHOW_AFTER_S = 0.25
REFRESH_S = 0.1  # at most ten redraws a second


def wanted(*, stdout_carries_data: bool) -> bool:
    """Whether to draw a bar (the rule in the module docstring)."""
    if os.environ.get("WTREC_NO_PROGRESS") or os.environ.get("TERM") == "dumb":
        return False
    if not _isatty(sys.stderr):
        return False
    return not (stdout_carries_data and _isatty(sys.stdout))


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


class CountingReader:
    """A binary input that counts the bytes read through it; everything else passes through."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data

    def readinto(self, buffer, /) -> int:
        got = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        self.count += got or 0
        return got

    def __getattr__(self, name: str):  # seek, seekable, fileno, close...
        return getattr(self._stream, name)


class InputProgress:
    """A context: one bar per input read inside it, erased on leaving it.

    When not `enabled`, `watch` hands the stream back untouched and nothing
    is drawn or started.
    """

    def __init__(self, *, enabled: bool):
        self.enabled = enabled
        self._sources: list[tuple[TaskID, Callable[[], int]]] = []
        self._progress: Progress | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> InputProgress:
        if self.enabled:
            # imported only when a bar is drawn: rich costs tens of ms to import
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            console = Console(file=sys.stderr, force_terminal=True)
            self._progress = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(),
                console=console, auto_refresh=False, transient=True,
                redirect_stdout=False, redirect_stderr=False)
            self._thread = threading.Thread(target=self._poll, args=(self._progress,),
                                            daemon=True, name="wtrec-progress")
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join()
        finally:
            if self._progress is not None and self._progress.live.is_started:
                self._progress.stop()  # erases the bar and shows the cursor again

    def watch(self, name: str, stream: BinaryIO, *, passes: int = 1) -> BinaryIO:
        """`stream`, counted under `name`; `passes` when the caller reads it more than once."""
        if self._progress is None:
            return stream
        counted = CountingReader(stream)
        size = _regular_file_size(stream)
        self.track(name, None if size is None else passes * size, lambda: counted.count)
        return counted  # type: ignore[return-value]

    def track(self, name: str, total: int | None, position: Callable[[], int]) -> None:
        """A bar for work whose progress `position` tells (in bytes of `total`)."""
        if self._progress is None:
            return
        description = escape_text(name if name != "-" else "stdin")
        self._sources.append((self._progress.add_task(description, total=total),
                              position))

    def _poll(self, progress: Progress) -> None:
        if self._stop.wait(SHOW_AFTER_S):
            return
        while True:
            for task, position in list(self._sources):
                progress.update(task, completed=position())
            if progress.live.is_started:
                progress.refresh()
            else:
                progress.start()  # draws the first frame
            if self._stop.wait(REFRESH_S):
                return


def _regular_file_size(stream: BinaryIO) -> int | None:
    """The input's size if it is a regular file (a pipe or terminal has none)."""
    try:
        info = os.fstat(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None
