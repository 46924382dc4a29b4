"""The offline commands (no root): info, filter, grep, scan, redact, merge, recover.

Each is a short pipeline: reader -> selection -> renderer or writer. They
are registered on the app of wtrec.cli, which owns printing and exit codes.
"""

import json
import sys
from dataclasses import replace
from typing import Annotated

import typer

from wtrec.cli import _reported_errors, _say, _use_color, app
from wtrec.cli_outputs import open_input, result_file
from wtrec.errors import FormatError, UsageError
from wtrec.records import IoEvent
from wtrec.select import Selection, compile_pattern, parse_time

FileArg = Annotated[str, typer.Argument(help="Capture file, or - for stdin.")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Result file, or - for stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing result file.")]
PidOpt = Annotated[list[int] | None, typer.Option("--pid", help="Only this pid or tid; repeatable.")]
CommOpt = Annotated[list[str] | None, typer.Option("--comm", help="Only this comm; repeatable.")]
FdOpt = Annotated[list[int] | None, typer.Option("--fd", help="Only this fd; repeatable.")]
ColorOpt = Annotated[str, typer.Option("--color", help="auto, always or never.")]


def _start(stream) -> tuple:
    from wtrec.format import start_reading

    return start_reading(stream)


def _warn_truncated(reader, name: str) -> None:
    if reader.warning:
        _say(f"{name}: {reader.warning}")


# ---------------------------------------------------------------- info


@app.command()
def info(
    files: Annotated[list[str], typer.Argument(help="Capture files, or - for stdin.")],
    json_view: Annotated[bool, typer.Option("--json", help="One JSON object per file.")] = False,
):
    """Summarise captures: header, span, totals per process and per fd, loss, compression."""
    with _reported_errors():
        from wtrec.info import as_dict, inspect, text_lines

        for number, name in enumerate(files):
            captured = inspect(name, open_input(name))
            if json_view:
                print(json.dumps(as_dict(captured), ensure_ascii=True))
            else:
                if number:
                    print()
                print("\n".join(text_lines(captured)))
            if captured.warning:
                _say(f"{name}: {captured.warning}")


# ---------------------------------------------------------------- filter


@app.command(name="filter")
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
    force: ForceOpt = False,
):
    """Write a capture holding only the chosen events (and their fd records)."""
    with _reported_errors():
        from wtrec.derive import derived_header, write_capture
        from wtrec.format import CaptureWriter
        from wtrec.select import select_for_writing

        if invert and match is None:
            raise UsageError("--invert inverts --match; give --match REGEX")
        with result_file(output, force, (file,)) as out:
            reader, records, header = _start(open_input(file))
            selection = Selection(
                pids=tuple(pid or ()), comms=tuple(comm or ()), fds=tuple(fd or ()),
                syscalls=tuple(syscall or ()),
                since_ns=None if since is None else parse_time(since, header, "--since"),
                until_ns=None if until is None else parse_time(until, header, "--until"),
                pattern=None if match is None else compile_pattern(match), invert=invert)
            notes = [(name, value) for name, value in (
                ("pid", ",".join(map(str, pid or ()))), ("comm", ",".join(comm or ())),
                ("fd", ",".join(map(str, fd or ()))), ("syscall", ",".join(syscall or ())),
                ("since", since or ""), ("until", until or ""), ("match", match or ""),
                ("invert", "yes" if invert else "")) if value]
            writer = CaptureWriter(out, derived_header([header], "filter", sys.argv, notes))
            end = write_capture(writer, select_for_writing(records, selection),
                                reader.end.ts_ns if reader.end else None)
        _warn_truncated(reader, file)
        _say(f"{end.events} of {reader.events} events kept -> {output}")


# ---------------------------------------------------------------- grep


@app.command()
def grep(
    pattern: Annotated[str, typer.Argument(help="Regular expression over payload bytes.")],
    files: Annotated[list[str], typer.Argument(help="Capture files, or - for stdin.")],
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
    color: ColorOpt = "auto",
):
    """Search payloads. Exit 0 when something matched, 1 when nothing did, 2 on error."""
    try:
        with _reported_errors():
            found = _grep(pattern, files, fixed, ignore_case, count, list_files, invert,
                          context, hex_view, stream, Selection(tuple(pid or ()), tuple(comm or ()),
                                                               tuple(fd or ())), color)
    except typer.Exit as exc:
        raise typer.Exit(2 if exc.exit_code not in (0, 130) else exc.exit_code) from None
    raise typer.Exit(0 if found else 1)


def _grep(pattern, files, fixed, ignore_case, count, list_files, invert, context, hex_view,
          stream, selection, color) -> bool:
    from wtrec.grep import (
        MatchPrinter,
        events_with_names,
        iter_event_matches,
        iter_stream_matches,
    )

    if invert and stream:
        raise UsageError("-v and --stream exclude each other")
    if color not in ("auto", "always", "never"):
        raise UsageError(f"--color takes auto, always or never, not {color!r}")
    regex = compile_pattern(pattern, fixed, ignore_case)
    write = sys.stdout.write
    found_any = False
    for name in files:
        reader, records, header = _start(open_input(name))
        names: dict = {}
        events = (e for e in events_with_names(records, names) if selection.matches(e))
        printer = MatchPrinter(header, names, f"{name}:" if len(files) > 1 else "", context,
                               hex_view, _use_color(color))
        hits = 0
        if stream:
            for match in iter_stream_matches(events, regex):
                hits += 1
                if list_files:
                    break
                if not count:
                    write("\n".join(printer.match_lines(match)) + "\n")
        else:
            for matches, event in iter_event_matches(events, regex):
                if bool(matches) == invert:
                    continue
                hits += 1
                if list_files:
                    break
                if count:
                    continue
                if invert:
                    write(printer.event_line(event) + "\n")
                for match in matches:
                    write("\n".join(printer.match_lines(match)) + "\n")
        if hits:
            found_any = True
        if count:
            write(f"{name}:{hits}\n" if len(files) > 1 else f"{hits}\n")
        elif list_files and hits:
            write(f"{name}\n")
        _warn_truncated(reader, name)
    sys.stdout.flush()
    return found_any


# ---------------------------------------------------------------- replay


def _rewindable(name: str):
    """The input, seekable: stdin is spooled to a temporary file first."""
    import shutil
    import tempfile

    stream = open_input(name)
    if name != "-" and stream.seekable():
        return stream
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller
    shutil.copyfileobj(stream, spool, 1 << 20)
    spool.seek(0)
    return spool


def _one_stream(name: str, selection: Selection, direction: str):
    """(summary of the chosen stream, header, reader, records positioned after the header)."""
    from wtrec.streams import choose_stream, list_streams

    stream = _rewindable(name)
    reader, records, _ = _start(stream)
    chosen = choose_stream(list_streams(records, selection), direction)
    stream.seek(0)
    reader, records, header = _start(stream)
    return chosen, header, reader, records


@app.command()
def replay(
    file: FileArg,
    to: Annotated[str | None, typer.Option(
        "--to", help="Resend one stream to tcp://HOST:PORT, unix:PATH, file:PATH or -.")] = None,
    pid: PidOpt = None,
    comm: CommOpt = None,
    fd: FdOpt = None,
    direction: Annotated[str, typer.Option(
        "--direction", help="out: what the process sent (default); in: what it received.")] = "out",
    timing: Annotated[bool, typer.Option(
        "--timing", help="With --to: keep the original gaps between writes.")] = False,
    speed: Annotated[float, typer.Option("--speed", help="Play this many times faster.",
                                         min=0.0001)] = 1.0,
    max_gap: Annotated[float | None, typer.Option(
        "--max-gap", help="Wait at most this many seconds between events.", min=0)] = None,
    show_response: Annotated[bool, typer.Option(
        "--show-response", help="Print what the peer sends back (escaped).")] = False,
    wait: Annotated[float, typer.Option(
        "--wait", help="With --show-response: seconds to wait for more after the last write.",
        min=0)] = 1.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be sent.")] = False,
    force: ForceOpt = False,
):
    """Play a capture on the terminal with its timing, or resend one stream to a peer."""
    with _reported_errors():
        from wtrec.replay import check_target

        if direction not in ("out", "in"):
            raise UsageError(f"--direction takes out or in, not {direction!r}")
        selection = Selection(tuple(pid or ()), tuple(comm or ()), tuple(fd or ()))
        if to is None and not dry_run:
            _replay_to_terminal(file, selection, speed, max_gap)
            return
        if to is not None:
            check_target(to)
        _replay_stream(file, selection, direction, to, timing, speed, max_gap, show_response,
                       wait, dry_run, force)


def _replay_to_terminal(file, selection, speed, max_gap) -> None:
    from wtrec.render import terminal_text
    from wtrec.replay import paced, timed

    reader, records, _header = _start(open_input(file))
    events = (r for r in records if isinstance(r, IoEvent) and selection.matches(r))
    last_key = None
    for event in paced(timed(events, speed, max_gap)):
        key = (event.pid, event.fd, event.direction)
        if key != last_key:
            arrow = "<-" if event.direction == "in" else "->"
            sys.stdout.write(f"\n--- {terminal_text(event.comm)} pid {event.pid} {arrow} "
                             f"fd {event.fd} ---\n")
            last_key = key
        sys.stdout.write(terminal_text(event.data))
        sys.stdout.flush()
    sys.stdout.write("\n")
    _warn_truncated(reader, file)


def _replay_stream(file, selection, direction, to, timing, speed, max_gap, show_response,
                   wait, dry_run, force) -> None:
    from wtrec.render import escape_bytes
    from wtrec.replay import SocketSink, StreamSink
    from wtrec.streams import sent_bytes, stream_events

    chosen, _header, reader, records = _one_stream(file, selection, direction)
    events = stream_events(records, chosen, direction)
    where = to or "the peer"
    if dry_run:
        first_ns = None
        sent = writes = 0
        for event in events:
            data = sent_bytes(event)
            first_ns = event.ts_ns if first_ns is None else first_ns
            note = "" if not event.truncated else f" (captured {len(event.data)} of {event.expected})"
            if not data:
                note = " (failed: nothing was sent, skipped)"
            else:
                writes += 1
                sent += len(data)
            print(f"#{event.seq} +{(event.ts_ns - first_ns) / 1e9:.6f}s {len(data)} bytes{note}: "
                  f"\"{escape_bytes(data[:60])}\"{'...' if len(data) > 60 else ''}")
        _say(f"would send {writes} writes, {sent} bytes of {chosen.describe()} to {where}")
        return
    if to == "-" or to.startswith("file:"):
        path = "-" if to == "-" else to[len("file:"):]
        with result_file(path, force, (file,)) as out:
            writes, sent, short = _send(StreamSink(out), events, timing, speed, max_gap,
                                        False, wait)
    else:
        sink = SocketSink(to)
        try:
            writes, sent, short = _send(sink, events, timing, speed, max_gap, show_response,
                                        wait)
        finally:
            sink.close()
    if short:
        _say(f"warning: {short} writes were captured truncated; only their captured bytes "
             "were sent")
    _warn_truncated(reader, file)
    _say(f"sent {writes} writes, {sent} bytes to {to}")


def _send(sink, events, timing, speed, max_gap, show_response, wait) -> tuple[int, int, int]:
    from wtrec.render import terminal_text
    from wtrec.replay import paced, timed
    from wtrec.streams import sent_bytes

    writes = sent = short = 0
    items = paced(timed(events, speed, max_gap)) if timing else events
    for event in items:
        data = sent_bytes(event)
        if not data:
            continue
        sink.send(data)
        writes += 1
        sent += len(data)
        short += event.truncated
        if show_response:
            for piece in sink.responses(0.0):
                sys.stdout.write(terminal_text(piece))
                sys.stdout.flush()
    if show_response:
        sink.finish()
        for piece in sink.responses(wait):
            sys.stdout.write(terminal_text(piece))
            sys.stdout.flush()
    return writes, sent, short


# ---------------------------------------------------------------- export


@app.command()
def export(
    file: FileArg,
    output: OutputOpt,
    format_name: Annotated[str, typer.Option(
        "--format", help="jsonl (every record), raw (one stream's bytes) or pcapng.")],
    pid: PidOpt = None,
    comm: CommOpt = None,
    fd: FdOpt = None,
    direction: Annotated[str, typer.Option(
        "--direction", help="raw: out (what the process sent, default) or in.")] = "out",
    force: ForceOpt = False,
):
    """Convert a capture: JSON lines, a stream's raw bytes, or pcapng for Wireshark."""
    with _reported_errors():
        from wtrec import __version__
        from wtrec.pcapng import PcapngWriter
        from wtrec.render import JsonRenderer
        from wtrec.select import select_for_writing, select_records
        from wtrec.streams import sent_bytes, stream_events

        if format_name not in ("jsonl", "raw", "pcapng"):
            raise UsageError(f"--format takes jsonl, raw or pcapng, not {format_name!r}")
        if direction not in ("out", "in"):
            raise UsageError(f"--direction takes out or in, not {direction!r}")
        selection = Selection(tuple(pid or ()), tuple(comm or ()), tuple(fd or ()))
        if format_name == "raw":
            chosen, _header, reader, records = _one_stream(file, selection, direction)
            with result_file(output, force, (file,)) as out:
                size = 0
                for event in stream_events(records, chosen, direction):
                    data = sent_bytes(event)
                    out.write(data)
                    size += len(data)
            _warn_truncated(reader, file)
            _say(f"{size} bytes of pid {chosen.pid} fd {chosen.fd} ({direction}) -> {output}")
            return
        with result_file(output, force, (file,), binary=format_name == "pcapng") as out:
            reader, records, header = _start(open_input(file))
            if format_name == "pcapng":
                pcap = PcapngWriter(out, header, f"wtrec {__version__}")
                pcap.write_all(select_for_writing(records, selection))
                summary = f"{pcap.packets} packets"
            else:
                renderer = JsonRenderer(header)
                lines = 0
                for line in _jsonl(renderer, header, select_records(records, selection)):
                    out.write(line.encode() + b"\n")
                    lines += 1
                summary = f"{lines} records"
        _warn_truncated(reader, file)
        if output != "-":
            _say(f"{summary} -> {output}")


def _jsonl(renderer, header, records):
    from wtrec.records import End, FdInfo, Lost

    yield from renderer.header_line(header)
    for record in records:
        if isinstance(record, IoEvent):
            yield from renderer.event(record)
        elif isinstance(record, FdInfo):
            yield from renderer.fd_info(record)
        elif isinstance(record, Lost):
            yield from renderer.lost(record)
        elif isinstance(record, End):
            yield from renderer.end_line(record)


# ---------------------------------------------------------------- scan, redact

PatternOpt = Annotated[list[str] | None, typer.Option(
    "--pattern", help="Also this regex (its first group, or all of it, is the secret); repeatable.")]
OnlyOpt = Annotated[list[str] | None, typer.Option(
    "--only", help="Only this built-in pattern (authorization, cookie, …); repeatable.")]


@app.command()
def scan(
    files: Annotated[list[str], typer.Argument(help="Capture files, or - for stdin.")],
    pattern: PatternOpt = None,
    only: OnlyOpt = None,
):
    """List what looks secret before sharing. Exit 0 when nothing was found, 1 when something was."""
    try:
        with _reported_errors():
            found = _scan(files, tuple(only or ()), tuple(pattern or ()))
    except typer.Exit as exc:
        raise typer.Exit(2 if exc.exit_code not in (0, 130) else exc.exit_code) from None
    raise typer.Exit(1 if found else 0)


def _scan(files, only, extra) -> int:
    from wtrec.grep import events_with_names
    from wtrec.render import escape_bytes
    from wtrec.secrets import find, preview, rules

    chosen = rules(only, extra)
    total = 0
    for name in files:
        reader, records, _header = _start(open_input(name))
        prefix = f"{name}:" if len(files) > 1 else ""
        events_hit = findings = 0
        for event in events_with_names(records, {}):
            hits = find(event.data, chosen)
            if not hits:
                continue
            events_hit += 1
            findings += len(hits)
            for hit in hits:
                seq = "" if event.seq is None else f"#{event.seq} "
                print(f"{prefix}{seq}{escape_bytes(event.comm)} pid {event.pid} fd {event.fd} "
                      f"{event.syscall} @{hit.start}: {hit.rule} "
                      f"\"{escape_bytes(preview(event.data, hit))}\" ({hit.end - hit.start} bytes)")
        _warn_truncated(reader, name)
        _say(f"{name}: {findings} possible secrets in {events_hit} of {reader.events} events")
        total += findings
    sys.stdout.flush()
    return total


@app.command()
def redact(
    file: FileArg,
    output: OutputOpt,
    pattern: PatternOpt = None,
    only: OnlyOpt = None,
    keep_length: Annotated[bool, typer.Option(
        "--keep-length", help="Replace each secret byte by '*' instead of '[REDACTED]'.")] = False,
    force: ForceOpt = False,
):
    """Write a copy with secrets replaced; the header says by which patterns."""
    with _reported_errors():

        from wtrec.derive import derived_header, write_capture
        from wtrec.format import CaptureWriter
        from wtrec.secrets import find, rules
        from wtrec.secrets import redact as blank

        chosen = rules(tuple(only or ()), tuple(pattern or ()))
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
            reader, records, header = _start(open_input(file))
            writer = CaptureWriter(out, derived_header([header], "redact", sys.argv, notes))
            write_capture(writer, redacted(records), reader.end.ts_ns if reader.end else None)
        _warn_truncated(reader, file)
        _say(f"{changed[1]} secrets replaced in {changed[0]} of {reader.events} events -> {output}")


def _resized(event: IoEvent, data: bytes) -> IoEvent:
    """The event with new data; a complete event's sizes follow, so it stays complete."""
    delta = len(data) - len(event.data)
    if not delta or event.truncated:
        return replace(event, data=data)
    if event.direction == "in":
        return replace(event, data=data, ret=event.ret + delta if event.ret else event.ret)
    ret = event.ret + delta if event.ret is not None and event.ret >= 0 else event.ret
    return replace(event, data=data, count=max(0, event.count + delta), ret=ret)


# ---------------------------------------------------------------- merge, recover


@app.command()
def merge(
    files: Annotated[list[str], typer.Argument(help="Capture files to merge.")],
    output: OutputOpt,
    force: ForceOpt = False,
):
    """One capture in time order from several; their headers are kept as provenance."""
    with _reported_errors():
        from wtrec.derive import derived_header, write_capture
        from wtrec.format import CaptureWriter
        from wtrec.merge import merged_records

        if len(files) < 2:
            raise UsageError("merge needs at least two captures")
        if files.count("-") > 1:
            raise UsageError("only one input can be stdin")
        starts = [_start(open_input(name)) for name in files]
        headers = [header for _, _, header in starts]
        order = sorted(range(len(files)), key=lambda i: headers[i].start_ns)
        out_header = derived_header([headers[i] for i in order], "merge", sys.argv,
                                    [("files", str(len(files)))])
        with result_file(output, force, tuple(files)) as out:
            writer = CaptureWriter(out, out_header)
            end = write_capture(writer, merged_records(
                [(records, header) for _, records, header in starts], out_header))
        for (reader, _, _), name in zip(starts, files):
            _warn_truncated(reader, name)
        _say(f"{end.events} events from {len(files)} captures -> {output}")


@app.command()
def recover(
    file: FileArg,
    output: OutputOpt,
    force: ForceOpt = False,
):
    """Salvage every whole record of a damaged or cut capture into a properly closed one."""
    with _reported_errors():
        from wtrec.derive import derived_header, write_capture
        from wtrec.format import CaptureWriter
        from wtrec.format_salvage import salvage

        stream = _rewindable(file)
        survey = salvage(stream)  # a first pass, so the header can say what was lost
        kept = sum(1 for record in survey.records if isinstance(record, IoEvent))
        for problem in survey.problems:
            _say(problem)
        if kept == 0 and survey.header.host == "unknown":
            raise FormatError("nothing in it could be recovered")
        notes = [("problems", str(len(survey.problems))),
                 ("unreadable-bytes", str(survey.lost_bytes)),
                 ("frames", (f"{survey.frames_ok} whole, {survey.frames_partial} cut, "
                             f"{survey.frames_lost} dropped"))]
        stream.seek(0)
        result = salvage(stream)
        header = derived_header([result.header], "recover", sys.argv, notes)
        with result_file(output, force, (file,)) as out:
            writer = CaptureWriter(out, header)
            end = write_capture(writer, result.records, result.end_ns)
        _say(f"recovered {end.events} events ({result.frames_ok} whole frames, "
             f"{result.frames_partial} cut, {result.frames_lost} dropped; "
             f"{result.lost_bytes} bytes unreadable) -> {output}")
