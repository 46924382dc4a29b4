"""Commands that read captures and print: show, info, grep, scan.

Each is a short pipeline: reader -> selection -> renderer, printing data on
stdout and messages on stderr.
"""

import json
import sys
from itertools import islice
from typing import Annotated

import typer

from wtrec.cli.exits import reported_errors, say, search_exit_codes
from wtrec.cli.options import (
    ColorMode,
    ColorOpt,
    CommOpt,
    FdOpt,
    FileArg,
    FilesArg,
    Layer,
    LayerOpt,
    PidOpt,
    as_tuple,
    layers_of,
    use_color,
)
from wtrec.cli.outputs import (
    TextOut,
    open_capture,
    open_input,
    records_after_header,
    warn_truncated,
)
from wtrec.cli.progress import InputProgress
from wtrec.cli.progress import wanted as progress_wanted
from wtrec.errors import UsageError
from wtrec.format import is_seekable
from wtrec.records import FdInfo, IoEvent, Lost
from wtrec.tools.fd_names import FdNames
from wtrec.tools.grep import (
    MatchPrinter,
    event_matches,
    iter_stream_matches,
)
from wtrec.tools.render import JsonRenderer, TextRenderer, escape_bytes, escape_text
from wtrec.tools.selection import Selection, compile_pattern, select_records

PatternOpt = Annotated[list[str] | None, typer.Option(
    "--pattern", help="Also this regex (its first group, or all of it, is the secret); repeatable.")]
OnlyOpt = Annotated[list[str] | None, typer.Option(
    "--only", help="Only this built-in pattern (authorization, cookie, …); repeatable.")]


def show(
    file: FileArg,
    hex_view: Annotated[bool, typer.Option("--hex", help="Hex dump of each payload.")] = False,
    json_view: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Show at most N events.",
                                                 min=0)] = None,
    pid: PidOpt = None,
    comm: CommOpt = None,
    fd: FdOpt = None,
    layer: LayerOpt = Layer.all,
    color: ColorOpt = ColorMode.auto,
) -> None:
    """Print the events of a capture (no root needed)."""
    with reported_errors():
        if hex_view and json_view:
            raise UsageError("--hex and --json exclude each other")
        stream = open_input(file)
        capture = open_capture(stream)
        renderer = (JsonRenderer(capture.header) if json_view else
                    TextRenderer(capture.header, hex_view, use_color(color)))
        selection = Selection(as_tuple(pid), as_tuple(comm), as_tuple(fd),
                              layers=layers_of(layer))
        out = TextOut()
        write = out.write
        live = not is_seekable(stream)  # a pipe may be a recording still going on
        if live:  # the header is shown before the first event arrives
            out.flush()
        for record in select_records(records_after_header(capture), selection, limit):
            if isinstance(record, IoEvent):
                lines = renderer.event(record)
            elif isinstance(record, Lost):
                lines = renderer.lost(record)
            elif isinstance(record, FdInfo):
                lines = renderer.fd_info(record)
            else:
                continue
            # A batch of lines at a time: a huge payload never becomes one string.
            batch = list(islice(lines, 1024))
            while batch:
                write("\n".join(batch) + "\n")
                batch = list(islice(lines, 1024)) if len(batch) == 1024 else []
            if live:  # shown now, not when the next frame arrives
                out.flush()
        out.flush()
        if capture.warning and (limit is None or capture.event_count < limit):
            say(capture.warning)


def info(
    files: FilesArg,
    json_view: Annotated[bool, typer.Option("--json", help="One JSON object per file.")] = False,
) -> None:
    """Summarise captures: header, span, totals per process and per fd, loss, compression."""
    from wtrec.tools.info import as_dict, series_lines, text_lines  # here: start-up of the others

    with reported_errors():
        headers = []
        for number, name in enumerate(files):
            captured, = open_capture(open_input(name)).summaries()
            captured.name = name
            headers.append(captured.header)
            if json_view:
                print(json.dumps(as_dict(captured), ensure_ascii=True))
            else:
                if number:
                    print()
                print("\n".join(text_lines(captured)))
            if captured.warning:
                say(f"{name}: {captured.warning}")
        if not json_view and len(files) > 1 and any(h.series for h in headers):
            print()
            print("\n".join(series_lines(headers)))


def grep(
    pattern: Annotated[str, typer.Argument(help="Regular expression over payload bytes.")],
    files: FilesArg,
    fixed: Annotated[bool, typer.Option("-F", "--fixed-strings",
                                        help="PATTERN is bytes, not a regex.")] = False,
    ignore_case: Annotated[bool, typer.Option("-i", "--ignore-case")] = False,
    count: Annotated[bool, typer.Option("-c", "--count", help="Print matching events per file.")] = False,
    list_files: Annotated[bool, typer.Option("-l", "--files-with-matches",
                                             help="Print only the names of files that match.")] = False,
    invert: Annotated[bool, typer.Option("-v", "--invert-match",
                                         help="Events that do not match.")] = False,
    context: Annotated[int | None, typer.Option("-C", "--context",
                                                help="Bytes of context each side.", min=0)] = None,
    hex_view: Annotated[bool, typer.Option("--hex", help="Show matches as a hex dump.")] = False,
    stream: Annotated[bool, typer.Option(
        "--stream", help="Join each (pid, fd)'s payloads, so matches across writes are found.")] = False,
    pid: PidOpt = None,
    comm: CommOpt = None,
    fd: FdOpt = None,
    layer: LayerOpt = Layer.all,
    color: ColorOpt = ColorMode.auto,
) -> None:
    """Search payloads. Exit 0 when something matched, 1 when nothing did, 2 on error."""
    with search_exit_codes():
        if invert and stream:
            raise UsageError("-v and --stream exclude each other")
        found = _grep_files(
            files, compile_pattern(pattern, fixed, ignore_case),
            selection=Selection(as_tuple(pid), as_tuple(comm), as_tuple(fd),
                                layers=layers_of(layer)),
            count=count, list_files=list_files, invert=invert, context=context,
            hex_view=hex_view, stream=stream, color=use_color(color))
    raise typer.Exit(0 if found else 1)


def _grep_files(files: list[str], regex, *, selection: Selection, count: bool,
                list_files: bool, invert: bool, context: int | None, hex_view: bool,
                stream: bool, color: bool) -> bool:
    out = TextOut()
    write = out.write
    found_any = False
    show_progress = progress_wanted(stdout_carries_data=not (count or list_files))
    for name in files:
        # the bar is per file and gone before that file's count or name is printed
        with InputProgress(enabled=show_progress) as progress:
            capture = open_capture(progress.watch(name, open_input(name)))
            # Without -v or --stream only events that match are built; the
            # rest are checked and counted.
            search = None if stream or invert else regex
            records = islice(capture.records(payload=search), 1, None)
            names = FdNames()
            events = (e for e in names.events(records) if selection.matches(e))
            printer = MatchPrinter(capture.header, names, f"{name}:" if len(files) > 1 else "", context,
                                   hex_view, color)
            hits = 0
            if stream:
                for match in iter_stream_matches(events, regex):
                    hits += 1
                    if list_files:
                        break
                    if not count:
                        write("\n".join(printer.match_lines(match)) + "\n")
            else:
                for event in events:
                    if (regex.search(event.data) is None) != invert:
                        continue
                    hits += 1
                    if list_files:
                        break
                    if count:
                        continue
                    if invert:
                        write(printer.event_line(event) + "\n")
                        continue
                    for match in event_matches(event, regex):
                        write("\n".join(printer.match_lines(match)) + "\n")
        found_any = found_any or bool(hits)
        if count:
            write(f"{name}:{hits}\n" if len(files) > 1 else f"{hits}\n")
        elif list_files and hits:
            write(f"{name}\n")
        out.flush()
        warn_truncated(capture, name)
    return found_any


def scan(
    files: FilesArg,
    pattern: PatternOpt = None,
    only: OnlyOpt = None,
) -> None:
    """List what looks secret before sharing. Exit 0 when nothing was found, 1 when something was."""
    from wtrec.tools.redaction import rules  # here: start-up of the other commands

    with search_exit_codes():
        chosen = rules(as_tuple(only), as_tuple(pattern))
        total = 0
        for name in files:
            total += _scan_file(name, chosen, prefix=f"{name}:" if len(files) > 1 else "")
        sys.stdout.flush()
    raise typer.Exit(1 if total else 0)


def _scan_file(name: str, chosen, *, prefix: str) -> int:
    from wtrec.tools.redaction import find, preview

    capture = open_capture(open_input(name))
    events_hit = findings = 0
    for event in FdNames().events(records_after_header(capture)):
        hits = find(event.data, chosen)
        if not hits:
            continue
        events_hit += 1
        findings += len(hits)
        for hit in hits:
            seq = "" if event.seq is None else f"#{event.seq} "
            print(f"{prefix}{seq}{escape_bytes(event.comm)} pid {event.pid} fd {event.fd} "
                  f"{escape_text(event.syscall)} @{hit.start}: {hit.rule} "
                  f"\"{escape_bytes(preview(event.data, hit))}\" ({hit.end - hit.start} bytes)")
    warn_truncated(capture, name)
    say(f"{name}: {findings} possible secrets in {events_hit} of {capture.event_count} events")
    return findings
