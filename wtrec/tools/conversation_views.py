"""Conversations, their bytes and their decoded messages as lines for a human or as JSON.

Like render.py for `show`: nothing from a capture reaches a terminal
unescaped. Text lines hold printable ASCII only; JSON is ensure_ascii.
"""

import base64
import json
import re
from collections.abc import Iterator

from wtrec.format import Counts
from wtrec.records import Header, Lost
from wtrec.tools.conversations import Conversation, Decoded, Piece, Side
from wtrec.tools.protocols import Message, duration_text
from wtrec.tools.render import BOLD, RED, RESET, escape_bytes, format_clock, hex_lines, quoted_lines

GREEN, CYAN, YELLOW = "\x1b[32m", "\x1b[36m", "\x1b[33m"
ARROWS = {"out": "->", "in": "<-"}
_UNSAFE = re.compile(r"[^\x20-\x5b\x5d-\x7e]")  # a backslash is escaped too, as `show` does
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0", "\\": "\\\\"}


def safe_text(value: str) -> str:
    """Decoded protocol text for a terminal: printable ASCII but `\\`, the rest as escapes.

    A backslash shows as \\\\, so the text `\\x9b` and the byte 0x9b (a lone
    surrogate from protocols.base.text) never look alike.
    """
    return _UNSAFE.sub(lambda m: _NAMED.get(m[0]) or "".join(f"\\x{b:02x}" for b in _utf8(m[0])), value)


def _utf8(char: str) -> bytes:
    try:
        return char.encode("utf-8", "surrogateescape")  # U+DC80..U+DCFF: the byte it stands for
    except UnicodeEncodeError:
        return char.encode("utf-8", "surrogatepass")  # any other lone surrogate, as it is


class Painter:
    def __init__(self, color: bool):
        self.color = color

    def __call__(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text


def short_clock(header: Header | None, ts_ns: int) -> str:
    """HH:MM:SS.mmm, local time."""
    return format_clock(header, ts_ns)[:12]


def side_text(side: Side) -> str:
    return f"{escape_bytes(side.comm)} {side.pid} fd {side.fd}"


def identity_text(side: Side) -> str:
    return escape_bytes(side.identity.describe().encode()) if side.identity else "unknown fd"


def _bytes_text(counts: Counts) -> str:
    text = f"{counts.captured} B in {counts.events} events"
    if counts.expected > counts.captured:
        text += f" ({counts.expected - counts.captured} B not captured)"
    return text


def stream_lines(header: Header | None, conversation: Conversation, paint: Painter) -> Iterator[str]:
    """`streams`: a title line per conversation, then a line per side."""
    span = conversation.last_ns - conversation.first_ns
    paired = "  both ends traced" if len(conversation.sides) == 2 else ""
    yield paint(BOLD, f"stream {conversation.number}  {conversation.proto}  "
                      f"{short_clock(header, conversation.first_ns)} .. "
                      f"{short_clock(header, conversation.last_ns)} ({duration_text(span)}){paired}")
    for side in conversation.sides:
        yield (f"  {side_text(side)}  {identity_text(side)}  sent {_bytes_text(side.out)}, "
               f"received {_bytes_text(side.into)}")


def _counts_dict(counts: Counts) -> dict:
    return {"events": counts.events, "bytes": counts.captured, "expected": counts.expected,
            "truncated": counts.truncated, "failed": counts.failed}


def stream_json(header: Header | None, conversation: Conversation) -> str:
    def wall(ts: int) -> int:
        return header.wall_ns(ts) if header else ts

    sides = []
    for side in conversation.sides:
        ident = side.identity
        sides.append({"pid": side.pid, "fd": side.fd, "comm": side.comm.decode("utf-8", "surrogateescape"),
                      "kind": ident.kind if ident else None, "local": ident.local if ident else None,
                      "remote": ident.remote if ident else None, "path": ident.path if ident else None,
                      "first_ns": side.first_ns, "last_ns": side.last_ns,
                      "out": _counts_dict(side.out), "in": _counts_dict(side.into)})
    return json.dumps({"stream": conversation.number, "proto": conversation.proto,
                       "first_ns": conversation.first_ns, "last_ns": conversation.last_ns,
                       "first_wall_ns": wall(conversation.first_ns),
                       "last_wall_ns": wall(conversation.last_ns), "sides": sides}, ensure_ascii=True)


class FollowRenderer:
    """`follow`: turns of one conversation, each marked with its direction and time offset.

    Directions are the first side's: -> it sent, <- it received, whichever
    side's events the bytes were read from.
    """

    def __init__(self, header: Header | None, conversation: Conversation, *, hex_view: bool,
                 paint: Painter):
        self.header = header
        self.conversation = conversation
        self.hex_view = hex_view
        self.paint = paint
        self.flow: int | None = None

    def title(self) -> Iterator[str]:
        yield from stream_lines(self.header, self.conversation, self.paint)
        yield ""

    def piece(self, piece: Piece) -> Iterator[str]:
        offset = piece.event.ts_ns - self.conversation.first_ns
        arrow = "->" if piece.flow == 0 else "<-"
        colour = GREEN if piece.flow == 0 else CYAN
        side, _direction = self.conversation.source_side(piece.flow)
        head = (f"{arrow} +{offset / 1e9:.6f} s  {len(piece.data)} B  "
                f"({side_text(side)} {piece.event.syscall})")
        if piece.flow != self.flow:
            yield self.paint(colour, head)
        else:
            yield self.paint(colour, head.replace(arrow, "  ", 1))
        self.flow = piece.flow
        body = hex_lines(piece.data) if self.hex_view else quoted_lines(piece.data)
        for line in body:
            yield "  " + line
        if piece.missing:
            yield self.paint(RED, f"-- {piece.missing} B of this {piece.event.syscall} not captured "
                                  "(snaplen) --")

    def lost(self, lost: Lost) -> Iterator[str]:
        self.flow = None
        yield self.paint(RED, f"-- {lost.count} events lost ({lost.source} buffer full) at "
                              f"{format_clock(self.header, lost.ts_ns)}; any stream may miss bytes here --")

    def cut_short(self) -> Iterator[str]:
        yield self.paint(RED, "-- the capture ends here, cut short (was the recorder killed?) --")


def follow_json(conversation: Conversation, item: Piece | Lost) -> str:
    if isinstance(item, Lost):
        return json.dumps({"type": "lost", "stream": conversation.number, "ts_ns": item.ts_ns,
                           "count": item.count, "source": item.source}, ensure_ascii=True)
    side, direction = conversation.source_side(item.flow)
    obj = {"type": "data", "stream": conversation.number, "flow": ARROWS["out" if item.flow == 0 else "in"],
           "pid": side.pid, "fd": side.fd, "direction": direction, "ts_ns": item.event.ts_ns,
           "offset_ns": item.event.ts_ns - conversation.first_ns, "syscall": item.event.syscall,
           "bytes": len(item.data), "missing": item.missing,
           "data_b64": base64.b64encode(item.data).decode("ascii")}
    try:
        obj["text"] = item.data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return json.dumps(obj, ensure_ascii=True)


def message_line(header: Header | None, decoded: Decoded, paint: Painter) -> str:
    """`messages`: `12:00:01.003 curl 4242 fd 3 -> GET /x HTTP/1.1`."""
    item = decoded.item
    conversation = decoded.conversation
    if item is None:
        side = decoded.side
        return (f"{short_clock(header, side.first_ns)} {side_text(side)} "
                + paint(YELLOW, f"?? stream {conversation.number}: unknown protocol "
                                f"({identity_text(side)})"))
    where = f"{short_clock(header, item.ts_ns)} {side_text(decoded.side)}"
    if isinstance(item, Message):
        arrow = ARROWS[decoded.direction]
        text = f"{arrow} {safe_text(item.summary)}"
        if item.incomplete:
            return f"{where} {paint(YELLOW, text + ' [incomplete]')}"
        return f"{where} {paint(GREEN if decoded.direction == 'out' else CYAN, text)}"
    return f"{where} {paint(RED, '!! ' + safe_text(item.text))}"


def message_json(decoded: Decoded, proto: str) -> str:
    item = decoded.item
    side = decoded.side
    obj: dict = {"proto": proto, "direction": decoded.direction, "pid": side.pid, "fd": side.fd,
                 "ts_ns": side.first_ns if item is None else item.ts_ns,
                 "stream": decoded.conversation.number,
                 "comm": side.comm.decode("utf-8", "surrogateescape")}
    if item is None:
        obj["note"] = "no decoder recognises this conversation"
    elif isinstance(item, Message):
        obj.update(item.fields)
        obj["incomplete"] = item.incomplete
    else:
        obj["note"] = item.text
    return json.dumps(obj, ensure_ascii=True)
