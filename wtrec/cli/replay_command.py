"""`wtrec replay`: a capture on the terminal with its timing, or one stream resent to a peer."""

import sys
from collections.abc import Iterable
from typing import Annotated

import typer

from wtrec.cli.exits import reported_errors, say
from wtrec.cli.options import (
    CommOpt,
    Direction,
    DirectionOpt,
    FdOpt,
    FileArg,
    ForceOpt,
    Layer,
    LayerOpt,
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
from wtrec.records import IoEvent
from wtrec.replay import Sink, SocketSink, StreamSink, check_target, paced, timed
from wtrec.tools.render import escape_bytes, terminal_text
from wtrec.tools.selection import Selection
from wtrec.tools.streams import one_stream, sent_bytes, stream_events


def replay(
    file: FileArg,
    to: Annotated[str | None, typer.Option(
        "--to", help="Resend one stream to tcp://HOST:PORT, unix:PATH, file:PATH or -.")] = None,
    pid: PidOpt = None,
    comm: CommOpt = None,
    fd: FdOpt = None,
    direction: DirectionOpt = Direction.out,
    layer: LayerOpt = Layer.all,
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
) -> None:
    """Play a capture on the terminal with its timing, or resend one stream to a peer."""
    with reported_errors():
        selection = Selection(as_tuple(pid), as_tuple(comm), as_tuple(fd),
                              layers=layers_of(layer))
        if to is None and not dry_run:
            _to_terminal(file, selection, speed=speed, max_gap=max_gap)
            return
        if to is not None:
            check_target(to)
        capture = open_capture(rewindable_input(file))
        chosen, records = one_stream(lambda: records_after_header(capture), selection, direction.value)
        events = stream_events(records, chosen, direction.value, selection)
        if dry_run or to is None:  # without --to only a dry run gets here
            _dry_run(events, f"{chosen.describe()} to {to or 'the peer'}")
            return
        if to == "-" or to.startswith("file:"):
            path = "-" if to == "-" else to[len("file:"):]
            with result_file(path, force, (file,)) as out:
                writes, sent, short = _send(StreamSink(out), events, timing=timing, speed=speed,
                                            max_gap=max_gap, show_response=False, wait=wait)
        else:
            sink = SocketSink(to)
            try:
                writes, sent, short = _send(sink, events, timing=timing, speed=speed,
                                            max_gap=max_gap, show_response=show_response,
                                            wait=wait)
            finally:
                sink.close()
        if short:
            say(f"warning: {short} writes were captured truncated; only their captured bytes "
                "were sent")
        warn_truncated(capture, file)
        say(f"sent {writes} writes, {sent} bytes to {to}")


def _to_terminal(file: str, selection: Selection, *, speed: float,
                 max_gap: float | None) -> None:
    capture = open_capture(open_input(file))
    events = (r for r in records_after_header(capture) if isinstance(r, IoEvent) and selection.matches(r))
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
    warn_truncated(capture, file)


def _dry_run(events: Iterable[IoEvent], where: str) -> None:
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
    say(f"would send {writes} writes, {sent} bytes of {where}")


def _send(sink: Sink, events: Iterable[IoEvent], *, timing: bool, speed: float,
          max_gap: float | None, show_response: bool, wait: float) -> tuple[int, int, int]:
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
