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

from wtrec.tools.protocols.base import FLOWS, MAX_HELD, Message, Note, Output, duration_text, text

PROTO = "redis"
_TYPES = b"+-:$*_#,(=%~>|!"
_LOOKS_LIKE = re.compile(rb"\*[1-9][0-9]*\r\n\$[0-9]+\r\n")
# a value starts a line; after a gap or a skipped value the buffer's start counts as one
_VALUE_START = re.compile(rb"(?:\A|(?<=\n))[+\-:$*_#,(=%~>|!]")
_INLINE = re.compile(rb"[\x20-\x7e\t]+")
_MAX_DEPTH = 32
_MAX_ITEMS = 100_000


def looks_like(first: bytes) -> bool:
    """Whether a flow's first bytes are a RESP command (an array of bulk strings)."""
    return bool(_LOOKS_LIKE.match(first))


def could_answer(first: bytes) -> bool:
    """Whether a flow's first bytes could be a RESP reply (not a sign on their own)."""
    return bool(first) and first[0] in _TYPES


class _NeedMore(Exception):
    """The buffer ends inside the value."""


class _Malformed(Exception):
    """The bytes are not RESP."""


class _TooBig(Exception):
    """The value declares more than a decoder holds."""


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
        raise _Malformed(f"bad length or integer {text(raw[:20])!r}")
    return int(raw)


def _parse(buf: bytearray, pos: int, depth: int = 0) -> tuple[object, int]:
    """One RESP value at `pos`: (value, position after it)."""
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
            raise _TooBig(size)
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
        if depth >= _MAX_DEPTH or count > _MAX_ITEMS:
            raise _Malformed("an aggregate nested or sized beyond reason")
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


def _json_value(value: object) -> object:
    if isinstance(value, _Error):
        return {"error": str(value)}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _short(value: object, room: int = 80) -> str:
    if isinstance(value, _Error):
        shown = f"(error) {value}"
    elif value is None:
        shown = "(nil)"
    elif isinstance(value, str):
        shown = f'"{value}"'
    elif isinstance(value, list):
        shown = "[" + ", ".join(_short(v, 20) for v in value[:8]) + (", …" if len(value) > 8 else "") + "]"
    else:
        shown = str(value)
    return shown if len(shown) <= room else shown[:room - 1] + "…"


class RedisDecoder:
    proto = PROTO

    def __init__(self) -> None:
        self.buffers = [bytearray(), bytearray()]
        self.first_ts = [0, 0]  # time of the event holding the open value's first byte
        self.suspect = [False, False]
        self.resync = [False, False]
        self.skipped = [0, 0]
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
            if self.resync[flow]:
                match = _VALUE_START.search(buf, pos)
                if match is None:
                    self.skipped[flow] += len(buf) - pos
                    pos = len(buf)
                    break
                self.skipped[flow] += match.start() - pos
                pos = match.start()
                self.resync[flow] = False
                if self.skipped[flow]:
                    yield Note(flow, ts_ns, f"skipped {self.skipped[flow]} bytes to the next RESP value")
                self.skipped[flow] = 0
                self.first_ts[flow] = ts_ns
            try:
                if flow == self.client and buf[pos] not in _TYPES:
                    line, end = _line(buf, pos)  # an inline command: words on a line
                    if not _INLINE.fullmatch(line):
                        raise _Malformed("neither a RESP value nor an inline command")
                    value: object = [text(w) for w in line.split()]
                else:
                    value, end = _parse(buf, pos)
            except _NeedMore:
                if len(buf) - pos > MAX_HELD:
                    yield from self._drop(flow, ts_ns, f"a value over {MAX_HELD} bytes")
                    pos = len(buf)
                break
            except _TooBig as exc:
                yield from self._drop(flow, ts_ns, f"a value of {exc.args[0]} bytes, more than "
                                      f"the {MAX_HELD} a decoder holds")
                pos = len(buf)
                break
            except _Malformed as exc:
                yield Note(flow, ts_ns, f"malformed RESP: {exc.args[0]}; resynchronising")
                self.resync[flow] = True
                self.skipped[flow] += 1
                pos += 1
                continue
            yield self._message(flow, value, self.first_ts[flow], self.suspect[flow])
            self.suspect[flow] = False
            pos = end
            self.first_ts[flow] = ts_ns
        del buf[:pos]

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

    def _drop(self, flow: int, ts_ns: int, why: str) -> Iterator[Output]:
        yield self._cut_message(flow, ts_ns)
        yield Note(flow, ts_ns, f"{why}; skipped, resynchronising")
        self.buffers[flow].clear()
        self.resync[flow] = True

    def _cut_message(self, flow: int, ts_ns: int) -> Message:
        """What is known of a value that never completed."""
        fields: dict = {"command": None} if flow == self.client else {"reply": None}
        return Message(flow, self.first_ts[flow], fields,
                       f"({len(self.buffers[flow])} bytes of an unfinished value)", True)

    def gap(self, flow: int, size: int | None, ts_ns: int) -> Iterator[Output]:
        if size is None:
            self.suspect[flow] = self.suspect[flow] or bool(self.buffers[flow])
            return
        if self.buffers[flow]:
            yield self._cut_message(flow, ts_ns)
            self.buffers[flow].clear()
        self.resync[flow] = True
        self.skipped[flow] += size

    def finish(self, ts_ns: int) -> Iterator[Output]:
        for flow in FLOWS:
            if self.buffers[flow] and not self.resync[flow]:
                yield self._cut_message(flow, ts_ns)
            elif self.resync[flow] and self.skipped[flow]:
                yield Note(flow, ts_ns, f"skipped {self.skipped[flow]} bytes at the end")
