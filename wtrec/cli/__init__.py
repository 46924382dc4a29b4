"""The command line (typer only): options, printing, exit codes; the only code that exits.

`main` (the `wtrec` script) and `app` (the whole typer application, for
tests and embedding) live in wtrec.cli.app; the commands, one group per
module, call into the capture session (wtrec.record), the format
(wtrec.format) and the rootless tools (wtrec.tools). Nothing is imported
here, so running one command loads only that command's module.
"""
