"""The typer application: every command registered, the version flag, `main`.

Commands live one group per module (record_command, read_commands, write_commands,
replay_command, conversation_commands, doctor_command); this module only puts them together.
"""

import importlib
import importlib.util
import sys
from typing import Annotated

import typer

from wtrec import __version__
from wtrec.cli import (
    conversation_commands,
    doctor_command,
    read_commands,
    record_command,
    replay_command,
    write_commands,
)
from wtrec.cli.exits import EXIT_INTERRUPTED, say

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Record the plaintext processes write to the kernel (eBPF); study it offline.",
)

app.command(context_settings={"allow_interspersed_args": False})(record_command.record)
app.command()(read_commands.show)
app.command()(read_commands.info)
app.command(name="filter")(write_commands.filter_command)
app.command()(read_commands.grep)
app.command()(replay_command.replay)
app.command()(write_commands.export)
app.command()(read_commands.scan)
app.command()(write_commands.redact)
app.command()(write_commands.merge)
app.command()(write_commands.recover)
app.command()(conversation_commands.streams)
app.command()(conversation_commands.follow)
app.command()(conversation_commands.messages)
app.command()(doctor_command.doctor)


def _version_callback(value: bool) -> None:
    if value:
        print(f"wtrec {__version__}")
        raise typer.Exit()


@app.callback()
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

    try:
        code = app(standalone_mode=False)
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
