"""`wtrec export --format parquet`: a capture's events as a Parquet file, through the Python API."""

from wtrec.cli.exits import say
from wtrec.cli.outputs import open_capture, open_input, result_file
from wtrec.cli.progress import InputProgress
from wtrec.tools.parquet import write_parquet


def export_parquet(file: str, output: str, *, pids: tuple[int, ...], comms: tuple[str, ...],
                   fds: tuple[int, ...], force: bool, show_progress: bool = False,
                   layer: str | None = None) -> None:
    """One row per chosen event, both directions (docs/PARQUET.md has the columns)."""
    with (result_file(output, force, (file,)) as out,
          InputProgress(enabled=show_progress) as progress):
        capture = open_capture(progress.watch(file, open_input(file)))
        rows = write_parquet(out, capture.events(pid=pids, comm=comms, fd=fds, layer=layer),
                             capture.header)
    if capture.warning:
        say(f"{file}: {capture.warning}")
    if output != "-":
        say(f"{rows} events -> {output}")
