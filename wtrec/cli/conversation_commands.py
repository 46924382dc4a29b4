"""Commands that read a capture as conversations: streams, follow, messages.

Each reads the capture twice (list and pair the conversations, then their
bytes), so stdin is spooled to a temporary file first.
"""

import sys
from enum import Enum
from typing import Annotated

import typer

from wtrec.cli.exits import reported_errors, say
from wtrec.cli.options import (
    ColorMode,
    ColorOpt,
    Direction,
    DirectionOpt,
    FileArg,
    ForceOpt,
    Layer,
    LayerOpt,
    layers_of,
    use_color,
)
from wtrec.cli.outputs import (
    open_capture,
    open_input,
    records_after_header,
    result_file,
    rewindable_input,
)
from wtrec.errors import UsageError
from wtrec.records import Lost
from wtrec.tools.conversation_views import (
    FollowRenderer,
    Painter,
    follow_json,
    message_json,
    message_line,
    stream_json,
    stream_lines,
)
from wtrec.tools.conversations import Conversation, iter_messages, iter_pieces, list_conversations
from wtrec.tools.protocols import UNKNOWN
from wtrec.tools.render import escape_bytes
from wtrec.tools.selection import Selection, select_records


class ProtoChoice(str, Enum):
    auto = "auto"
    http = "http"
    http2 = "http2"
    redis = "redis"
    postgres = "postgres"


AllOpt = Annotated[bool, typer.Option("--all", help="Every fd, not only sockets (files, pipes, ttys).")]
StreamOpt = Annotated[list[int] | None, typer.Option("--stream", help="Only this stream number; repeatable.")]


def _records(capture, layer: Layer):
    """The capture's records, with --layer: a TLS connection's socket carries the plaintext
    calls (tls) and the ciphertext (syscall); a conversation wants one of them."""
    records = records_after_header(capture)
    if layer is Layer.all:
        return records
    return select_records(records, Selection(layers=layers_of(layer)))


def _conversations(path: str, every_fd: bool, layer: Layer = Layer.all):
    """The capture read once for its conversations; returns it, to read again, and them."""
    capture = open_capture(rewindable_input(path))
    conversations = list_conversations(_records(capture, layer),
                                       every_fd=every_fd).conversations
    return capture, conversations


def streams(
    file: FileArg,
    json_view: Annotated[bool, typer.Option("--json", help="One JSON object per conversation.")] = False,
    every_fd: AllOpt = False,
    layer: LayerOpt = Layer.all,
    color: ColorOpt = ColorMode.auto,
) -> None:
    """List the conversations: one per connection, both traced ends paired into one."""
    with reported_errors():
        capture = open_capture(open_input(file))
        header = capture.header
        listing = list_conversations(_records(capture, layer), every_fd=every_fd)
        conversations = listing.conversations
        paint = Painter(use_color(color))
        for conversation in conversations:
            if json_view:
                print(stream_json(header, conversation))
            else:
                print("\n".join(stream_lines(header, conversation, paint)))
        if listing.hidden:
            plural = "s" if listing.hidden != 1 else ""
            say(f"not listed: {listing.hidden} descriptor{plural} the recorder could not name, "
                "in no protocol we know; --all lists them")
        elif not conversations:
            say("no conversations in this capture" + ("" if every_fd else " (--all lists every fd)"))
        sys.stdout.flush()
        if capture.warning:
            say(capture.warning)


def _choose(conversations: list[Conversation], number: int | None) -> Conversation:
    if number is not None:
        for conversation in conversations:
            if conversation.number == number:
                return conversation
        raise UsageError(f"no stream {number}; `wtrec streams FILE` lists {len(conversations)}")
    if len(conversations) == 1:
        return conversations[0]
    if not conversations:
        raise UsageError("no conversations in this capture")
    listing = "\n".join(
        f"  stream {c.number}: {c.proto} " + ", ".join(
            f"{escape_bytes(s.comm)} {s.pid} fd {s.fd}" for s in c.sides)
        for c in conversations[:20])
    more = f"\n  … and {len(conversations) - 20} more" if len(conversations) > 20 else ""
    raise UsageError(f"{len(conversations)} streams; choose one (wtrec follow FILE N):\n{listing}{more}")


def follow(
    file: FileArg,
    number: Annotated[int | None, typer.Argument(metavar="[STREAM]",
                                                 help="Stream number from `wtrec streams`.")] = None,
    hex_view: Annotated[bool, typer.Option("--hex", help="Hex dump of each payload.")] = False,
    json_view: Annotated[bool, typer.Option("--json", help="One JSON object per piece.")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Only the bytes of one direction, to -o.")] = False,
    output: Annotated[str, typer.Option("-o", "--output", help="With --raw: result file, or - .")] = "-",
    direction: DirectionOpt = Direction.out,
    force: ForceOpt = False,
    every_fd: AllOpt = False,
    layer: LayerOpt = Layer.all,
    color: ColorOpt = ColorMode.auto,
) -> None:
    """Print one conversation in time order, both directions, gaps where they happen."""
    with reported_errors():
        if sum((hex_view, json_view, raw)) > 1:
            raise UsageError("--hex, --json and --raw exclude each other")
        capture, conversations = _conversations(file, every_fd, layer)
        conversation = _choose(conversations, number)
        header = capture.header
        pieces = iter_pieces(_records(capture, layer), [conversation])
        if raw:
            wanted = 0 if direction is Direction.out else 1
            with result_file(output, force, (file,)) as out:
                for item in pieces:
                    if not isinstance(item, Lost) and item.flow == wanted:
                        out.write(item.data)
        else:
            _print_follow(header, conversation, pieces, capture, hex_view=hex_view,
                          json_view=json_view, color=use_color(color))
        if capture.warning:
            say(capture.warning)


def _print_follow(header, conversation, pieces, capture, *, hex_view: bool, json_view: bool,
                  color: bool) -> None:
    write = sys.stdout.write
    renderer = FollowRenderer(header, conversation, hex_view=hex_view, paint=Painter(color))
    if not json_view:
        write("\n".join(renderer.title()) + "\n")
    for item in pieces:
        if isinstance(item, Lost):
            if not conversation.first_ns <= item.ts_ns <= conversation.last_ns:
                continue
            lines = [follow_json(conversation, item)] if json_view else list(renderer.lost(item))
        else:
            lines = [follow_json(conversation, item)] if json_view else list(renderer.piece(item))
        write("\n".join(lines) + "\n")
    if capture.truncated and not json_view:
        write("\n".join(renderer.cut_short()) + "\n")
    sys.stdout.flush()


def messages(
    file: FileArg,
    proto: Annotated[ProtoChoice, typer.Option("--proto", help="Decode as this protocol; auto "
                                               "guesses per conversation.")] = ProtoChoice.auto,
    json_view: Annotated[bool, typer.Option("--json", help=(
        "One JSON object per message. Strings are the protocol's bytes as UTF-8; a byte that is "
        "not valid UTF-8 is a lone surrogate \\udcNN (Python: s.encode('utf-8', "
        "'surrogateescape') gives the bytes back)."))] = False,
    number: StreamOpt = None,
    every_fd: AllOpt = False,
    layer: LayerOpt = Layer.all,
    color: ColorOpt = ColorMode.auto,
) -> None:
    """Decode each conversation into protocol messages (HTTP/1.x, HTTP/2, Redis, Postgres).

    The human view escapes all but printable ASCII (a backslash as \\\\, as `show` does).
    """
    with reported_errors():
        capture, conversations = _conversations(file, every_fd, layer)
        if number:
            known = {c.number for c in conversations}
            for wanted in number:
                if wanted not in known:
                    raise UsageError(f"no stream {wanted}; `wtrec streams FILE` lists {len(conversations)}")
            conversations = [c for c in conversations if c.number in number]
        header = capture.header
        records = _records(capture, layer)
        forced = None if proto is ProtoChoice.auto else proto.value
        paint = Painter(use_color(color))
        write = sys.stdout.write
        for decoded in iter_messages(records, conversations, proto=forced):
            if json_view:
                name = forced or decoded.conversation.proto
                write(message_json(decoded, UNKNOWN if decoded.item is None else name) + "\n")
            else:
                write(message_line(header, decoded, paint) + "\n")
        sys.stdout.flush()
        if capture.warning:
            say(capture.warning)
