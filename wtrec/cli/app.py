"""The typer application: every command registered, the version flag, `main`.

Commands live one group per module (record_command, read_commands, write_commands,
replay_command, conversation_commands, doctor_command); this module only puts them
together, and `main` imports only the module of the command it runs (start-up time).
"""

import importlib
import importlib.util
import sys
from typing import Annotated, Any

import typer

from wtrec import __version__
from wtrec.cli.exits import EXIT_INTERRUPTED, say

HELP = "Record the plaintext processes write to the kernel (eBPF); study it offline."

# How long a thread may hold the GIL while another waits, in the offline
# commands. They read frames in threads (wtrec/wtrace/reader.py): with
# Python's 5 ms the decompressing threads waited for the decoding one at
# each frame, and `grep` on 271 MB of 4 KiB events ran 0.37-0.41 s after
# start-up, against 0.26-0.27 s with 0.2 ms. Set for the whole process,
# so here, not in the library; `record` keeps Python's default, which its
# loop was measured with.
OFFLINE_SWITCH_INTERVAL = 0.0002

# (command name, module in wtrec.cli, function, extra typer settings), in --help order.
# A command's module is imported only when that command runs (or for --help):
# `wtrec show` does not load the recorder, `record` not the protocol parsers.
COMMANDS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("record", "record_command", "record",
     {"context_settings": {"allow_interspersed_args": False}}),
    ("show", "read_commands", "show", {}),
    ("info", "read_commands", "info", {}),
    ("filter", "write_commands", "filter_command", {}),
    ("grep", "read_commands", "grep", {}),
    ("replay", "replay_command", "replay", {}),
    ("export", "write_commands", "export", {}),
    ("scan", "read_commands", "scan", {}),
    ("redact", "write_commands", "redact", {}),
    ("merge", "write_commands", "merge", {}),
    ("recover", "write_commands", "recover", {}),
    ("streams", "conversation_commands", "streams", {}),
    ("follow", "conversation_commands", "follow", {}),
    ("messages", "conversation_commands", "messages", {}),
    ("doctor", "doctor_command", "doctor", {}),
)


def make_app(only: str | None = None) -> typer.Typer:
    """The typer application with every command, or with the one named `only`."""
    application = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                              no_args_is_help=True, help=HELP)
    application.callback()(_root)
    for name, module_name, function, settings in COMMANDS:
        if only is None or name == only:
            module = importlib.import_module(f"wtrec.cli.{module_name}")
            application.command(name=name, **settings)(getattr(module, function))
    return application


def _version_callback(value: bool) -> None:
    if value:
        print(f"wtrec {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback,
                                          is_eager=True, help="Print the version.")] = False,
) -> None:
    """Record the plaintext processes write to the kernel (eBPF); study it offline."""


def main() -> None:
    """Runs the app; click's usage errors become one `wtrec:` line, exit 2."""
    # typer >= 0.2x vendors click; older typer uses click itself
    click_exceptions = importlib.import_module(
        "typer._click.exceptions" if importlib.util.find_spec("typer._click") else
        "click.exceptions")
    ClickUsageError = click_exceptions.UsageError

    named = sys.argv[1] if len(sys.argv) > 1 else None
    if named != "record":
        sys.setswitchinterval(OFFLINE_SWITCH_INTERVAL)
    known = {name for name, *_ in COMMANDS}
    application = make_app(named if named in known else None)
    try:
        code = application(standalone_mode=False)
    except ClickUsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "wtrec"
        if exc.format_message():  # empty after no_args_is_help printed the help
            say(f"{exc.format_message()} (see {command} --help)")
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


_full_app: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    """`app`: the whole application, built on first use (tests, embedding)."""
    global _full_app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _full_app is None:
        _full_app = make_app()
    return _full_app
