"""Commands that write a result file: filter, export, redact, merge, recover.

Each reads its inputs as hostile, writes through `result_file` (beside the
final name, renamed into place on success) and reports on stderr.
"""

import sys
from dataclasses import replace
from typing import Annotated

import typer

from wtrec import __version__
from wtrec.cli.exits import reported_errors, say
from wtrec.cli.options import (
    CommOpt,
    Direction,
    DirectionOpt,
    ExportFormat,
    FdOpt,
    FileArg,
    ForceOpt,
    Layer,
    LayerOpt,
    OutputOpt,
    PidOpt,
    as_tuple,
    layers_of,
)
from wtrec.cli.outputs import (
    open_capture,
    open_input,
    records_after_header,
    result_file,
    rewindable_input,
    warn_truncated,
)
from wtrec.cli.progress import InputProgress
from wtrec.cli.progress import wanted as progress_wanted
from wtrec.cli.read_commands import OnlyOpt, PatternOpt
from wtrec.errors import FormatError, UsageError
from wtrec.format import CaptureWriter, salvage
from wtrec.records import IoEvent
from wtrec.tools.merge import merged_records
from wtrec.tools.pcapng import PcapngWriter
from wtrec.tools.provenance import derived_header, write_capture
from wtrec.tools.redaction import find, rules
from wtrec.tools.redaction import redact as blank
from wtrec.tools.render import JsonRenderer
from wtrec.tools.selection import (
    Selection,
    compile_pattern,
    parse_time,
    select_for_writing,
    select_records,
)
from wtrec.tools.streams import one_stream, sent_bytes, stream_events


def filter_command(
    file: FileArg,
    output: OutputOpt,
    pid: PidOpt = None,
    comm: CommOpt = None,
    fd: FdOpt = None,
    syscall: Annotated[list[str] | None, typer.Option(
        "--syscall", help="Only this syscall (write, sendmsg, read…); repeatable.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Seconds from the start, or an ISO time.")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Seconds from the start, or an ISO time.")] = None,
    match: Annotated[str | None, typer.Option(
        "--match", help="Only events whose payload matches this regex.")] = None,
    invert: Annotated[bool, typer.Option(
        "--invert", help="With --match: only events it does not match.")] = False,
    layer: LayerOpt = Layer.all,
    force: ForceOpt = False,
) -> None:
    """Write a capture holding only the chosen events (and their fd records)."""
    with reported_errors():
        if invert and match is None:
            raise UsageError("--invert inverts --match; give --match REGEX")
        with (result_file(output, force, (file,)) as out,
              InputProgress(enabled=progress_wanted(stdout_carries_data=output == "-")) as progress):
            capture = open_capture(progress.watch(file, open_input(file)))
            header = capture.header
            selection = Selection(
                pids=as_tuple(pid), comms=as_tuple(comm), fds=as_tuple(fd),
                syscalls=as_tuple(syscall),
                since_ns=None if since is None else parse_time(since, header, "--since"),
                until_ns=None if until is None else parse_time(until, header, "--until"),
                pattern=None if match is None else compile_pattern(match), invert=invert,
                layers=layers_of(layer))
            notes = [(name, value) for name, value in (
                ("pid", ",".join(map(str, pid or ()))), ("comm", ",".join(comm or ())),
                ("fd", ",".join(map(str, fd or ()))), ("syscall", ",".join(syscall or ())),
                ("since", since or ""), ("until", until or ""), ("match", match or ""),
                ("invert", "yes" if invert else ""),
                ("layer", "" if layer is Layer.all else layer.value)) if value]
            writer = CaptureWriter(out, derived_header([header], "filter", sys.argv, notes))
            end = write_capture(writer, select_for_writing(records_after_header(capture), selection),
                                capture.end.ts_ns if capture.end else None)
        warn_truncated(capture, file)
        say(f"{end.events} of {capture.event_count} events kept -> {output}")


def export(
    file: FileArg,
    output: OutputOpt,
    format_name: Annotated[ExportFormat, typer.Option(
        "--format", help="jsonl (every record), raw (one stream's bytes), pcapng or parquet.")],
    pid: PidOpt = None,
    comm: CommOpt = None,
    fd: FdOpt = None,
    direction: DirectionOpt = Direction.out,
    layer: LayerOpt = Layer.all,
    force: ForceOpt = False,
) -> None:
    """Convert a capture: JSON lines, a stream's raw bytes, pcapng for Wireshark, or Parquet."""
    with reported_errors():
        selection = Selection(as_tuple(pid), as_tuple(comm), as_tuple(fd),
                              layers=layers_of(layer))
        show_progress = progress_wanted(stdout_carries_data=output == "-")
        if format_name is ExportFormat.raw:
            _export_raw(file, output, selection, direction.value, force, show_progress)
            return
        if format_name is ExportFormat.parquet:  # needs the parquet extra (pyarrow)
            from wtrec.cli.parquet_export import export_parquet
            export_parquet(file, output, pids=selection.pids, comms=selection.comms,
                           fds=selection.fds, force=force, show_progress=show_progress,
                           layer=None if layer is Layer.all else layer.value)
            return
        with (result_file(output, force, (file,), binary=format_name is ExportFormat.pcapng) as out,
              InputProgress(enabled=show_progress) as progress):
            capture = open_capture(progress.watch(file, open_input(file)))
            header = capture.header
            records = records_after_header(capture)
            if format_name is ExportFormat.pcapng:
                pcap = PcapngWriter(out, header, f"wtrec {__version__}")
                pcap.write_all(select_for_writing(records, selection))
                summary = f"{pcap.packets} packets"
            else:
                lines = 0
                for line in JsonRenderer(header).all_lines(header, select_records(records,
                                                                                  selection)):
                    out.write(line.encode() + b"\n")
                    lines += 1
                summary = f"{lines} records"
        warn_truncated(capture, file)
        if output != "-":
            say(f"{summary} -> {output}")


def _export_raw(file: str, output: str, selection: Selection, direction: str,
                force: bool, show_progress: bool) -> None:
    with InputProgress(enabled=show_progress) as progress:
        source = progress.watch(file, rewindable_input(file), passes=2)  # one_stream reads twice
        capture = open_capture(source)
        chosen, records = one_stream(lambda: records_after_header(capture), selection, direction)
        with result_file(output, force, (file,)) as out:
            size = 0
            for event in stream_events(records, chosen, direction, selection):
                data = sent_bytes(event)
                out.write(data)
                size += len(data)
    warn_truncated(capture, file)
    say(f"{size} bytes of pid {chosen.pid} fd {chosen.fd} ({direction}) -> {output}")


def redact(
    file: FileArg,
    output: OutputOpt,
    pattern: PatternOpt = None,
    only: OnlyOpt = None,
    keep_length: Annotated[bool, typer.Option(
        "--keep-length", help="Replace each secret byte by '*' instead of '[REDACTED]'.")] = False,
    force: ForceOpt = False,
) -> None:
    """Write a copy with secrets replaced; the header says by which patterns."""
    with reported_errors():
        chosen = rules(as_tuple(only), as_tuple(pattern))
        changed = [0, 0]

        def redacted(records):
            for record in records:
                if isinstance(record, IoEvent):
                    hits = find(record.data, chosen)
                    if hits:
                        changed[0] += 1
                        changed[1] += len(hits)
                        record = _resized(record, blank(record.data, hits, keep_length))
                yield record

        notes = [("patterns", ",".join(r.name for r in chosen)),
                 ("replacement", "same-length *" if keep_length else "[REDACTED]")]
        notes += [(f"pattern-{n}", text) for n, text in enumerate(pattern or (), 1)]
        with result_file(output, force, (file,)) as out:
            capture = open_capture(open_input(file))
            writer = CaptureWriter(out, derived_header([capture.header], "redact", sys.argv, notes))
            write_capture(writer, redacted(records_after_header(capture)),
                          capture.end.ts_ns if capture.end else None)
        warn_truncated(capture, file)
        say(f"{changed[1]} secrets replaced in {changed[0]} of {capture.event_count} events "
            f"-> {output}")


def _resized(event: IoEvent, data: bytes) -> IoEvent:
    """The event with new data; a complete event's sizes follow, so it stays complete."""
    delta = len(data) - len(event.data)
    if not delta or event.truncated:
        return replace(event, data=data)
    if event.direction == "in":
        return replace(event, data=data, ret=event.ret + delta if event.ret else event.ret)
    ret = event.ret + delta if event.ret is not None and event.ret >= 0 else event.ret
    return replace(event, data=data, count=max(0, event.count + delta), ret=ret)


def merge(
    files: Annotated[list[str], typer.Argument(help="Capture files to merge.")],
    output: OutputOpt,
    force: ForceOpt = False,
) -> None:
    """One capture in time order from several; their headers are kept as provenance."""
    with reported_errors():
        if len(files) < 2:
            raise UsageError("merge needs at least two captures")
        if files.count("-") > 1:
            raise UsageError("only one input can be stdin")
        with InputProgress(enabled=progress_wanted(stdout_carries_data=output == "-")) as progress:
            captures = [open_capture(progress.watch(name, open_input(name))) for name in files]
            headers = [capture.header for capture in captures]
            order = sorted(range(len(files)), key=lambda i: headers[i].start_ns)
            out_header = derived_header([headers[i] for i in order], "merge", sys.argv,
                                        [("files", str(len(files)))])
            with result_file(output, force, tuple(files)) as out:
                writer = CaptureWriter(out, out_header)
                end = write_capture(writer, merged_records(
                    [(records_after_header(capture), capture.header) for capture in captures],
                    out_header))
        for capture, name in zip(captures, files, strict=True):
            warn_truncated(capture, name)
        say(f"{end.events} events from {len(files)} captures -> {output}")


def recover(
    file: FileArg,
    output: OutputOpt,
    force: ForceOpt = False,
) -> None:
    """Salvage every whole record of a damaged or cut capture into a properly closed one."""
    with reported_errors():
        stream = rewindable_input(file)
        show_progress = progress_wanted(stdout_carries_data=output == "-")
        with InputProgress(enabled=show_progress) as progress:
            survey = salvage(stream)  # a first pass, so the header can say what was lost
            progress.track(f"{file} (checking)", survey.size, lambda: survey.examined)
            kept = sum(1 for record in survey.records if isinstance(record, IoEvent))
        if kept == 0 and survey.header.host == "unknown":  # an error is one line
            first = f" ({survey.problems[0]})" if survey.problems else ""
            raise FormatError(f"nothing in it could be recovered{first}")
        for problem in survey.problems:
            say(problem)
        if survey.problem_count > len(survey.problems):
            say(f"... and {survey.problem_count - len(survey.problems)} more problems "
                "(only the first are listed)")
        notes = [("problems", str(survey.problem_count)),
                 ("unreadable-bytes", str(survey.lost_bytes)),
                 ("frames", (f"{survey.frames_ok} whole, {survey.frames_partial} cut, "
                             f"{survey.frames_lost} dropped"))]
        stream.seek(0)
        with InputProgress(enabled=show_progress) as progress:
            result = salvage(stream)
            progress.track(file, result.size, lambda: result.examined)
            header = derived_header([result.header], "recover", sys.argv, notes)
            with result_file(output, force, (file,)) as out:
                writer = CaptureWriter(out, header)
                end = write_capture(writer, result.records, result.end_ns)
        say(f"recovered {end.events} events ({result.frames_ok} whole frames, "
            f"{result.frames_partial} cut, {result.frames_lost} dropped; "
            f"{result.lost_bytes} bytes unreadable) -> {output}")
