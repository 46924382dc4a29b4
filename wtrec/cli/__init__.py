"""The command line (typer only): options, printing, exit codes; the only code that exits.

`app` and `main` live in wtrec.cli.app; the commands, one group per module,
call into the capture session (wtrec.record), the format (wtrec.format) and
the rootless tools (wtrec.tools).
"""

from wtrec.cli.app import app, main

__all__ = ["app", "main"]
