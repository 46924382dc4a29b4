"""Redis RESP (2 and 3): commands as lists of strings, replies as JSON values.

The first flow to speak is the client (a Redis server never speaks first).
A value is parsed only once it is whole in the buffer, which holds at most
MAX_HELD bytes: a longer value, or a length claim beyond it, is reported
incomplete and skipped; after malformed bytes the decoder skips to the next
line that starts a RESP value.
"""

import re
from collections import deque
from collections.abc import Iterator

from wtrec.tools.protocols.base import FLOWS, MAX_HELD, Message, Note, Output, duration_text, quoted, text

PROTO = "redis"
_TYPES = b"+-:$*_#,(=%~>|!"
_LOOKS_LIKE = re.compile(rb"\*[1-9][0-9]*\r\n\$[0-9]+\r\n")
# a value starts a line; after a gap or a skipped value the buffer's start counts as one
_VALUE_START = re.compile(rb"(?:\A|(?<=\n))[+\-:$*_#,(=%~>|!]")
_INLINE = re.compile(rb"[\x20-\x7e\t]+")
_MAX_DEPTH = 32
_MAX_ITEMS = 100_000  # more items than this are walked and counted, not parsed into a list
_PREVIEW_ITEMS = 8  # of a walked value: its first items of up to _PREVIEW_BYTES are kept
_PREVIEW_BYTES = 256


def looks_like(first: bytes) -> bool:
    """Whether a flow's first bytes are a RESP command (an array of bulk strings)."""
    return bool(_LOOKS_LIKE.match(first))


def could_answer(first: bytes) -> bool:
    """Whether a flow's first bytes could be a RESP reply (not a sign on their own)."""
    return bool(first) and first[0] in _TYPES


class _NeedMore(Exception):
    """The buffer ends inside the value."""


class _Malformed(Exception):
    """The bytes are not RESP; `at` is where the bad value starts (set by _parse)."""

    def __init__(self, why: str, at: int | None = None):
        super().__init__(why)
        self.why, self.at = why, at


class _TooBig(Exception):
    """The value is more than a decoder holds: it is walked (counted), not parsed."""


class _Error(str):
    """A RESP error reply, kept apart from a simple string."""


def _line(buf: bytearray, pos: int) -> tuple[bytes, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if len(buf) - pos > 4096:
            raise _Malformed("a line over 4096 bytes")
        raise _NeedMore
    return bytes(buf[pos:end]), end + 2


def _integer(raw: bytes) -> int:
    if not re.fullmatch(rb"-?[0-9]{1,19}", raw):
        raise _Malformed(f"bad length or integer {quoted(text(raw[:20]))}")
    return int(raw)


def _parse(buf: bytearray, pos: int, depth: int = 0) -> tuple[object, int]:
    """One RESP value at `pos`: (value, position after it)."""
    try:
        return _parse_value(buf, pos, depth)
    except _Malformed as exc:
        if exc.at is None:
            exc.at = pos
        raise


def _parse_value(buf: bytearray, pos: int, depth: int) -> tuple[object, int]:
    if pos >= len(buf):
        raise _NeedMore
    kind = buf[pos]
    line, pos = _line(buf, pos + 1)
    if kind in b"+":
        return text(line), pos
    if kind in b"-!" and kind == ord("-"):
        return _Error(text(line)), pos
    if kind in b":(":
        return _integer(line), pos
    if kind in b",":
        return text(line), pos
    if kind in b"#":
        return line == b"t", pos
    if kind in b"_":
        return None, pos
    if kind in b"$=!":
        size = _integer(line)
        if size < 0:
            return None, pos
        if size > MAX_HELD:
            raise _TooBig
        if len(buf) < pos + size + 2:
            raise _NeedMore
        if buf[pos + size:pos + size + 2] != b"\r\n":
            raise _Malformed("a bulk string longer than its length")
        value = text(buf[pos:pos + size])
        return (_Error(value) if kind == ord("!") else value), pos + size + 2
    if kind in b"*%~>|":
        count = _integer(line)
        if count < 0:
            return None, pos
        if depth >= _MAX_DEPTH:
            raise _Malformed(f"aggregates nested deeper than {_MAX_DEPTH}")
        if count > _MAX_ITEMS:
            raise _TooBig
        per_item = 2 if kind in b"%|" else 1
        items = []
        for _ in range(count * per_item):
            item, pos = _parse(buf, pos, depth + 1)
            items.append(item)
        if kind == ord("|"):  # an attribute precedes the real value
            return _parse(buf, pos, depth)
        if per_item == 2:
            return [[items[i], items[i + 1]] for i in range(0, len(items), 2)], pos
        return items, pos
    raise _Malformed(f"byte 0x{kind:02x} starts no RESP value")


_KIND_NAMES = {ord("$"): "bulk string", ord("="): "verbatim string", ord("!"): "bulk error",
               ord("*"): "array", ord("%"): "map", ord("~"): "set", ord(">"): "push", ord("|"): "attribute"}


class _Walk:
    """A value too big to hold, walked line by line: counted, its first few items kept.

    `stack` holds, per open aggregate, how many values it still awaits (the
    bottom entry is the one top-level value); a bulk payload is skipped by
    count. Memory is bounded by _MAX_DEPTH and _PREVIEW whatever the value claims.
    """

    def __init__(self, ts_ns: int) -> None:
        self.ts_ns = ts_ns
        self.stack = [1]
        self.bulk = 0  # payload bytes (and CRLF) of a bulk string still to pass
        self.size = 0  # bytes walked
        self.kind = 0  # type byte of the top-level value
        self.declared = 0  # its length (bulk) or item count (aggregate)
        self.preview: list[object] = []  # its first top-level items, up to the first one too big
        self.preview_open = True
        self.cut = False  # bytes inside a bulk payload were not captured (snaplen)

    @property
    def done(self) -> bool:
        return not self.stack

    @property
    def items_read(self) -> int:
        """Top-level items complete so far."""
        if self.kind not in _KIND_NAMES or self.kind in b"$=!":
            return 0
        per_item = 2 if self.kind in b"%|" else 1
        if not self.stack:
            return self.declared
        if len(self.stack) < 2:
            return 0
        return self.declared - (self.stack[1] + per_item - 1) // per_item

    def run(self, buf: bytearray, pos: int) -> int:
        """Walks from `pos` as far as the buffer goes; returns where it stopped."""
        while self.stack and pos < len(buf):
            if self.bulk:
                take = min(self.bulk, len(buf) - pos)
                self.bulk -= take
                self.size += take
                pos += take
                if not self.bulk:
                    self._one_done()
                continue
            try:
                line, end = _line(buf, pos)
            except _Malformed as exc:
                exc.at = pos
                raise
            except _NeedMore:
                break
            kind = buf[pos]
            top_item = len(self.stack) == 2
            try:
                if kind in b"$=!":
                    size = _integer(line[1:])
                    if top_item and self._previewing() and 0 <= size <= _PREVIEW_BYTES:
                        if len(buf) < end + size + 2:
                            break  # a small item: wait for it whole, to show it
                        self.preview.append(text(buf[end:end + size]))
                    elif top_item and size >= 0:
                        self.preview_open = False
                    elif top_item and self._previewing():
                        self.preview.append(None)
                    self._start(kind, size)
                    self.bulk = size + 2 if size >= 0 else 0
                    if size < 0:
                        self._one_done()
                elif kind in b"*%~>|":
                    count = _integer(line[1:])
                    if top_item and count >= 0:
                        self.preview_open = False
                    elif top_item and self._previewing():
                        self.preview.append(None)
                    self._start(kind, count)
                    if count <= 0:
                        self._one_done()
                    elif len(self.stack) > _MAX_DEPTH:
                        raise _Malformed(f"aggregates nested deeper than {_MAX_DEPTH}")
                    else:
                        if kind == ord("|"):  # the attribute comes before the value it annotates
                            self.stack[-1] += 1
                        self.stack.append(count * (2 if kind in b"%|" else 1))
                elif kind in _TYPES:
                    if top_item and self._previewing():
                        value, _end = _parse(buf, pos)
                        self.preview.append(value)
                    self._start(kind, 0)
                    self._one_done()
                else:
                    raise _Malformed(f"byte 0x{kind:02x} starts no RESP value")
            except _Malformed as exc:
                exc.at = pos
                raise
            self.size += end - pos
            pos = end
        return pos

    def pass_uncaptured(self, size: int) -> bool:
        """`size` payload bytes the snaplen cut (at most `bulk`); whether the value is now done."""
        self.bulk -= size
        self.size += size
        self.cut = True
        if not self.bulk:
            self._one_done()
        return self.done

    def _previewing(self) -> bool:
        return self.preview_open and len(self.preview) < _PREVIEW_ITEMS

    def _start(self, kind: int, declared: int) -> None:
        if not self.size:
            self.kind, self.declared = kind, declared

    def _one_done(self) -> None:
        while self.stack:
            self.stack[-1] -= 1
            if self.stack[-1] > 0:
                return
            self.stack.pop()

    def describe(self) -> str:
        """`array of 20000 items, 250013 B, not kept`."""
        name = _KIND_NAMES.get(self.kind, "value")
        if self.kind in b"$=!":
            return f"{name} of {self.declared} B, not kept"
        read = "" if self.done else f" ({self.items_read} read)"
        return f"{name} of {self.declared} items{read}, {self.size} B, not kept"


def _json_value(value: object) -> object:
    if isinstance(value, _Error):
        return {"error": str(value)}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _short(value: object, room: int = 80) -> str:
    """A value in at most `room` characters; what is cut is marked with an ASCII "..."."""
    if isinstance(value, _Error):
        shown = f"(error) {value}"
    elif value is None:
        shown = "(nil)"
    elif isinstance(value, str):
        if len(value) + 2 > room:  # the closing quote stays; the mark goes after it
            return f'"{value[:max(room - 5, 1)]}"...'
        return f'"{value}"'
    elif isinstance(value, list):
        shown = "[" + ", ".join(_short(v, 20) for v in value[:8]) + (", ..." if len(value) > 8 else "") + "]"
    else:
        shown = str(value)
    return shown if len(shown) <= room else shown[:room - 3] + "..."


class RedisDecoder:
    proto = PROTO

    def __init__(self) -> None:
        self.buffers = [bytearray(), bytearray()]
        self.first_ts = [0, 0]  # time of the event holding the open value's first byte
        self.suspect = [False, False]
        self.resync = [False, False]
        self.skipped = [0, 0]
        self.skip_reason: list[str | None] = [None, None]  # why this flow is skipping bytes
        self.skip_ts = [0, 0]
        self.walks: list[_Walk | None] = [None, None]
        self.client: int | None = None
        self.pending: deque[int] = deque()  # times of commands awaiting replies

    def feed(self, flow: int, data: bytes, ts_ns: int) -> Iterator[Output]:
        if self.client is None:
            self.client = flow
        buf = self.buffers[flow]
        if not buf:
            self.first_ts[flow] = ts_ns
        buf += data
        pos = 0
        while pos < len(buf):
            walk = self.walks[flow]
            if walk is not None:
                try:
                    pos = walk.run(buf, pos)
                except _Malformed as exc:
                    at = exc.at if exc.at is not None else pos
                    self.walks[flow] = None
                    self._skip(flow, ts_ns, f"malformed RESP inside a value over {MAX_HELD} bytes: {exc.why}",
                               walk.size + (at - pos) + 1)
                    pos = at + 1
                    continue
                if not walk.done:
                    break
                self.walks[flow] = None
                yield self._walked(flow, walk, incomplete=self.suspect[flow])
                self.suspect[flow] = False
                self.first_ts[flow] = ts_ns
                continue
            if self.resync[flow]:
                match = _VALUE_START.search(buf, pos)
                if match is None:
                    self.skipped[flow] += len(buf) - pos
                    pos = len(buf)
                    break
                self.skipped[flow] += match.start() - pos
                pos = match.start()
                self.resync[flow] = False
                self.first_ts[flow] = ts_ns
            try:
                if flow == self.client and buf[pos] not in _TYPES:
                    line, end = _line(buf, pos)  # an inline command: words on a line
                    if not _INLINE.fullmatch(line):
                        raise _Malformed("neither a RESP value nor an inline command", pos)
                    value: object = [text(w) for w in line.split()]
                else:
                    value, end = _parse(buf, pos)
            except _NeedMore:
                if len(buf) - pos <= MAX_HELD:
                    break
                yield from self._skipped_note(flow)
                self.walks[flow] = _Walk(self.first_ts[flow])
                continue
            except _TooBig:
                yield from self._skipped_note(flow)
                self.walks[flow] = _Walk(self.first_ts[flow])
                continue
            except _Malformed as exc:
                at = exc.at if exc.at is not None else pos
                self._skip(flow, ts_ns, f"malformed RESP: {exc.why}", at + 1 - pos)
                pos = at + 1
                continue
            yield from self._skipped_note(flow)
            yield self._message(flow, value, self.first_ts[flow], self.suspect[flow])
            self.suspect[flow] = False
            pos = end
            self.first_ts[flow] = ts_ns
        del buf[:pos]

    def _skip(self, flow: int, ts_ns: int, why: str, size: int) -> None:
        """Bytes skipped; the first reason of a run of skips is the one its one note gives."""
        if self.skip_reason[flow] is None:
            self.skip_reason[flow] = why
            self.skip_ts[flow] = ts_ns
        self.skipped[flow] += size
        self.resync[flow] = True

    def _skipped_note(self, flow: int) -> Iterator[Output]:
        """The one note for a run of skipped bytes, once decoding is back on its feet."""
        if self.skipped[flow]:
            why = self.skip_reason[flow] or "bytes missing"
            yield Note(flow, self.skip_ts[flow],
                       f"{why}; skipped {self.skipped[flow]} bytes to the next value")
        self.skipped[flow] = 0
        self.skip_reason[flow] = None

    def _message(self, flow: int, value: object, ts_ns: int, incomplete: bool) -> Message:
        if flow == self.client:
            command = value if isinstance(value, list) else [value]
            words = [w if isinstance(w, str) else _short(w) for w in command]
            self.pending.append(ts_ns)
            return Message(flow, ts_ns, {"command": words}, " ".join(words)[:160],
                           incomplete)
        latency = ts_ns - self.pending.popleft() if self.pending else None
        summary = _short(value)
        if latency is not None:
            summary += f" ({duration_text(latency)})"
        return Message(flow, ts_ns, {"reply": _json_value(value), "latency_ns": latency}, summary,
                       incomplete)

    def _walked(self, flow: int, walk: _Walk, incomplete: bool) -> Message:
        """One message for a value too big to hold: its type, counts and first items."""
        fields: dict = {"type": _KIND_NAMES.get(walk.kind, "value"), "bytes": walk.size, "kept": False}
        if walk.kind in b"$=!":
            fields["length"] = walk.declared
        else:
            fields["items"] = walk.declared
            fields["items_read"] = walk.items_read
            fields["first_items"] = _json_value(walk.preview)
        if walk.cut:
            fields["captured"] = False
        incomplete = incomplete or not walk.done
        if flow == self.client:
            words = [v if isinstance(v, str) else _short(v) for v in walk.preview]
            fields["command"] = words
            self.pending.append(walk.ts_ns)
            return Message(flow, walk.ts_ns, fields, (" ".join(words)[:120] + " ... " if words else "")
                           + f"({walk.describe()})", incomplete)
        preview = ", ".join(_short(v, 20) for v in walk.preview)
        summary = walk.describe() + (f": [{preview}, ...]" if preview else "")
        latency = walk.ts_ns - self.pending.popleft() if self.pending else None
        fields["reply"] = None
        fields["latency_ns"] = latency
        if latency is not None:
            summary += f" ({duration_text(latency)})"
        return Message(flow, walk.ts_ns, fields, summary, incomplete)

    def _cut_message(self, flow: int, ts_ns: int) -> Message:
        """What is known of a value that never completed."""
        walk = self.walks[flow]
        if walk is not None:
            self.walks[flow] = None
            return self._walked(flow, walk, incomplete=True)
        fields: dict = {"command": None} if flow == self.client else {"reply": None}
        return Message(flow, self.first_ts[flow], fields,
                       f"({len(self.buffers[flow])} bytes of an unfinished value)", True)

    def gap(self, flow: int, size: int | None, ts_ns: int) -> Iterator[Output]:
        walk = self.walks[flow]
        if size is None:
            self.suspect[flow] = self.suspect[flow] or bool(self.buffers[flow]) or walk is not None
            return
        if walk is not None and not self.buffers[flow] and size <= walk.bulk:
            if walk.pass_uncaptured(size):
                self.walks[flow] = None
                yield self._walked(flow, walk, incomplete=self.suspect[flow])
                self.suspect[flow] = False
            return
        if self.buffers[flow] or walk is not None:
            yield self._cut_message(flow, ts_ns)
            self.buffers[flow].clear()
        self._skip(flow, ts_ns, f"{size} bytes missing", size)

    def finish(self, ts_ns: int) -> Iterator[Output]:
        for flow in FLOWS:
            if self.walks[flow] is not None or (self.buffers[flow] and not self.resync[flow]):
                yield self._cut_message(flow, ts_ns)
            if self.skipped[flow]:
                why = self.skip_reason[flow] or "bytes missing"
                yield Note(flow, self.skip_ts[flow], f"{why}; skipped {self.skipped[flow]} bytes at the end")
