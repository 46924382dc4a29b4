"""Where offline commands read and put their results: inputs, atomic result files, stdout.

A result file appears whole or not at all: it is written beside its final
name and renamed into place on success, so a failed command leaves
whatever was there before untouched, and an existing file is replaced only
with --force. Inputs are never overwritten by their own outputs.
"""

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from wtrec.cli.exits import say
from wtrec.errors import InputError, OutputError, UsageError
from wtrec.format import CaptureReader


def open_input(path: str) -> BinaryIO:
    """The named file, or stdin for '-'; a missing file or a directory is an InputError."""
    if path == "-":
        return sys.stdin.buffer
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the caller reads it to the end
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if os.path.isdir(path):
        raise InputError(f"cannot read {path}: it is a directory")
    return stream


def rewindable_input(path: str) -> BinaryIO:
    """The input, seekable: stdin (or a pipe) is spooled to a temporary file first."""
    stream = open_input(path)
    if path != "-" and stream.seekable():
        return stream
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller
    shutil.copyfileobj(stream, spool, 1 << 20)
    spool.seek(0)
    return spool


def warn_truncated(reader: CaptureReader, name: str) -> None:
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
    """Yields the stream to write; the file takes its name only if the block succeeds."""
    if path == "-":
        if binary and sys.stdout.isatty():
            raise OutputError("refusing to write binary data to a terminal; "
                              "redirect stdout or give -o FILE")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    for name in inputs:
        if name != "-" and _same_file(name, path):
            raise UsageError(f"{path} is also an input; write the result elsewhere")
    if os.path.exists(path) and not force:
        raise OutputError(f"{path} exists; give --force to overwrite it")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
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


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
