"""How the command line reports: one `wtrec: ...` line on stderr and an exit code.

Every WtrecError becomes its message and its `exit_code`; anything else is
a bug and says so in one line (WTREC_DEBUG=1 shows the traceback). The
codes are listed in README.md.
"""

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from wtrec.errors import OutputError, WtrecError

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def say(message: str) -> None:
    """One message line on stderr, prefixed so it is told apart from data."""
    print(f"wtrec: {message}", file=sys.stderr, flush=True)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Maps wtrec's errors to one stderr line and an exit code."""
    try:
        yield
        # Output still buffered must fail here, where it is reported, not at exit.
        sys.stdout.flush()
    except WtrecError as exc:
        say(exc.message)
        raise typer.Exit(exc.exit_code) from None
    except BrokenPipeError:
        # The reader of our stdout went away (| head): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except OSError as exc:
        if exc.errno not in _FULL_OUTPUT:
            raise _internal(exc) from None
        # Only writing fails so (stdout on a full disk or /dev/full).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        say(f"cannot write the output: {exc.strerror}")
        raise typer.Exit(OutputError.exit_code) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # a bug: say so in one line, not a traceback
        raise _internal(exc) from None


_FULL_OUTPUT = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _internal(exc: Exception) -> typer.Exit:
    """A bug: says so in one line (WTREC_DEBUG=1 re-raises it for the traceback)."""
    if os.environ.get("WTREC_DEBUG"):
        raise exc
    say(f"internal error (a bug, please report it): {type(exc).__name__}: {exc}; "
        "WTREC_DEBUG=1 shows the traceback")
    return typer.Exit(EXIT_INTERNAL)


@contextmanager
def search_exit_codes() -> Iterator[None]:
    """grep/scan convention: errors exit 2 (0 and 1 mean found and not found)."""
    try:
        with reported_errors():
            yield
    except typer.Exit as exc:
        code = exc.exit_code
        raise typer.Exit(2 if code not in (0, EXIT_INTERRUPTED) else code) from None
