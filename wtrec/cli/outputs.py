"""Where offline commands read and put their results: inputs, atomic result files, stdout.

A result file appears whole or not at all: it is written beside its final
name and renamed into place on success, so a failed command leaves
whatever was there before untouched, and an existing file is replaced only
with --force. Inputs are never overwritten by their own outputs.
"""

import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from typing import BinaryIO

from wtrec import api
from wtrec.cli.exits import say
from wtrec.errors import InputError, OutputError, UsageError
from wtrec.format import CaptureReader
from wtrec.records import Record


def open_input(path: str) -> BinaryIO:
    """The named file, or stdin for '-'; a missing file or a directory is an InputError."""
    if path == "-":
        # Our own reader over fd 0, not sys.stdin.buffer: a read-ahead thread may be
        # blocked in it at exit (Ctrl-C, or the capture's end read early), and closing
        # sys.stdin at shutdown would then abort the interpreter (SIGABRT) on its lock.
        try:
            return open(sys.stdin.fileno(), "rb", closefd=False)
        except (AttributeError, ValueError, OSError):  # a stdin with no fd (tests' CliRunner)
            return sys.stdin.buffer
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the caller reads it to the end
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if os.path.isdir(path):
        raise InputError(f"cannot read {path}: it is a directory")
    return stream


def open_capture(stream: BinaryIO) -> api.Capture:
    """A command's input read through the Python API (stdin too: one pass, header read once).

    The "ends early" message is the command's to say (warn_truncated), so
    the API raises no Python warning.
    """
    return api.open(stream, warn=False)


def records_after_header(capture: api.Capture) -> Iterator[Record]:
    """A pass over the capture's records without its header (the caller has `capture.header`)."""
    return islice(capture.records(), 1, None)


def rewindable_input(path: str) -> BinaryIO:
    """The input, seekable: stdin (or a pipe) is spooled to a temporary file first."""
    stream = open_input(path)
    if path != "-" and stream.seekable():
        return stream
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller
    shutil.copyfileobj(stream, spool, 1 << 20)
    spool.seek(0)
    return spool


class TextOut:
    """Text for stdout, handed on in writes of about 64 KiB.

    stdout may be unbuffered (PYTHONUNBUFFERED), and then every small write
    is a system call; `flush` hands on what is gathered and flushes.
    """

    def __init__(self, limit: int = 1 << 16):
        self._parts: list[str] = []
        self._size = 0
        self._limit = limit

    def write(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self._limit:
            self._hand_on()

    def _hand_on(self) -> None:
        if self._parts:
            sys.stdout.write("".join(self._parts))
            self._parts.clear()
            self._size = 0

    def flush(self) -> None:
        self._hand_on()
        sys.stdout.flush()


def warn_truncated(reader: CaptureReader | api.Capture, name: str) -> None:
    """Says on stderr when an input ended early (after its records were used)."""
    if reader.warning:
        say(f"{name}: {reader.warning}")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@contextmanager
def result_file(path: str, force: bool, inputs: tuple[str, ...] = (),
                binary: bool = True) -> Iterator[BinaryIO]:
    """Yields the stream to write; the file takes its name only if the block succeeds.

    An existing character device or FIFO given with --force is written
    into, as a shell redirection would, never replaced by a file. A write
    or close that fails is an OutputError (exit 7), unless the block
    failed first: then its error is the one reported.
    """
    if path == "-":
        if binary and sys.stdout.isatty():
            raise OutputError("refusing to write binary data to a terminal; "
                              "redirect stdout or give -o FILE")
        with _write_errors("stdout"):
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
        return
    for name in inputs:
        if name != "-" and _same_file(name, path):
            raise UsageError(f"{path} is also an input; write the result elsewhere")
    if os.path.lexists(path) and not force:
        raise OutputError(f"{path} exists; give --force to overwrite it")
    if _is_device_or_fifo(path):
        with _opened_device(path) as device:
            yield device
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror}") from None
    try:
        with _closing(os.fdopen(fd, "wb"), path) as out:
            yield out
        if force:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails rather than replace a file made meanwhile
            except FileExistsError:
                raise OutputError(f"{path} exists; give --force to overwrite it") from None
            os.unlink(temporary)
    except OSError as exc:
        _remove(temporary)
        raise OutputError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        _remove(temporary)
        raise


def _is_device_or_fifo(path: str) -> bool:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


@contextmanager
def _opened_device(path: str) -> Iterator[BinaryIO]:
    """A character device or FIFO opened for writing (not followed if a symlink)."""
    try:
        # O_NONBLOCK: a FIFO nobody reads fails at once (ENXIO) instead of hanging.
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(fd, True)
    except OSError as exc:
        reason = "nothing reads that FIFO" if exc.errno == errno.ENXIO else exc.strerror
        raise OutputError(f"cannot write {path}: {reason}") from None
    with _write_errors(path), _closing(os.fdopen(fd, "wb"), path) as out:
        yield out


@contextmanager
def _closing(out: BinaryIO, name: str) -> Iterator[BinaryIO]:
    """Closes `out`; a failed close is reported only if nothing failed before it."""
    try:
        yield out
        out.flush()
    except BaseException:
        try:
            out.close()
        except OSError:
            pass  # the first error is the one to report
        raise
    try:
        out.close()
    except OSError as exc:
        raise OutputError(f"cannot write {name}: {exc.strerror}") from None


@contextmanager
def _write_errors(name: str) -> Iterator[None]:
    """An OSError while writing `name` becomes an OutputError."""
    try:
        yield
    except BrokenPipeError:
        raise  # the reader went away (| head): not an error, see reported_errors
    except OSError as exc:
        if name == "stdout":
            _drop_stdout()
        raise OutputError(f"cannot write {name}: {exc.strerror}") from None


def _drop_stdout() -> None:
    """Points stdout at /dev/null, so the final flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
