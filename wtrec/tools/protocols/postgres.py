"""The PostgreSQL frontend/backend protocol (v3): startup, simple and extended query.

Decoded: StartupMessage, SSLRequest, Query, Parse, Bind, Execute, Sync,
Terminate, RowDescription, DataRow (counted), CommandComplete,
ErrorResponse/NoticeResponse, ReadyForQuery, ParameterStatus,
Authentication; other types come out by name with their length. Every
message carries its length, so a gap inside one is skipped and the message
reported incomplete; a body over MAX_HELD is counted, not held. After
malformed bytes the decoder looks for the next plausible type + length.
"""

import struct
from collections.abc import Iterator, Sequence

from wtrec.tools.protocols.base import FLOWS, MAX_HELD, Message, Note, Output, quoted, text

PROTO = "postgres"
PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
_MAX_LENGTH = 1 << 30  # the server's own limit for a message

FRONTEND = {ord("Q"): "Query", ord("P"): "Parse", ord("B"): "Bind", ord("E"): "Execute",
            ord("S"): "Sync", ord("X"): "Terminate", ord("D"): "Describe", ord("C"): "Close",
            ord("H"): "Flush", ord("p"): "PasswordMessage", ord("F"): "FunctionCall",
            ord("d"): "CopyData", ord("c"): "CopyDone", ord("f"): "CopyFail"}
BACKEND = {ord("R"): "Authentication", ord("S"): "ParameterStatus", ord("K"): "BackendKeyData",
           ord("Z"): "ReadyForQuery", ord("T"): "RowDescription", ord("D"): "DataRow",
           ord("C"): "CommandComplete", ord("E"): "ErrorResponse", ord("N"): "NoticeResponse",
           ord("1"): "ParseComplete", ord("2"): "BindComplete", ord("3"): "CloseComplete",
           ord("n"): "NoData", ord("I"): "EmptyQueryResponse", ord("s"): "PortalSuspended",
           ord("t"): "ParameterDescription", ord("A"): "NotificationResponse",
           ord("G"): "CopyInResponse", ord("H"): "CopyOutResponse", ord("d"): "CopyData",
           ord("c"): "CopyDone", ord("V"): "FunctionCallResponse", ord("v"): "NegotiateProtocolVersion"}
_ERROR_FIELDS = {"S": "severity", "V": "severity", "C": "code", "M": "message", "D": "detail",
                 "H": "hint", "P": "position", "W": "where", "F": "file", "L": "line", "R": "routine"}


def looks_like(first: bytes) -> bool:
    """A StartupMessage, SSLRequest or GSSENCRequest: int32 length, int32 code."""
    if len(first) < 8:
        return False
    length, code = struct.unpack_from(">ii", first)
    return 8 <= length <= 10_000 and code in (PROTOCOL_3, SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST)


def could_answer(first: bytes) -> bool:
    """A server's first bytes: Authentication, an error, or the one-byte SSL answer."""
    return first[:1] in (b"R", b"E", b"N", b"S", b"v")


class _Body:
    """A cursor over one message body; running off its end raises IndexError."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def cstring(self) -> str:
        end = self.data.index(b"\0", self.pos)
        value, self.pos = self.data[self.pos:end], end + 1
        return text(value)

    def count(self, what: str, each: int) -> int:
        """An Int16 count of items of at least `each` bytes, checked against what the body holds."""
        value = self.int(2) & 0xFFFF  # the server sends these unsigned in all but name
        if value * each > len(self.data) - self.pos:
            raise _BadCount(f"{value} {what} claimed, room for {(len(self.data) - self.pos) // each}")
        return value

    def skip(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise IndexError("past the end")
        value, self.pos = self.data[self.pos:self.pos + size], self.pos + size
        return value

    def rest(self) -> None:
        """The body must be used up: bytes left over mean the counts lied."""
        if self.pos != len(self.data):
            raise _BadCount(f"{len(self.data) - self.pos} bytes left over")

    def int(self, size: int) -> int:
        if self.pos + size > len(self.data):
            raise IndexError("past the end")
        value = int.from_bytes(self.data[self.pos:self.pos + size], "big", signed=True)
        self.pos += size
        return value


class _BadCount(ValueError):
    """A count or length inside a message that its body does not bear out."""


class _Flow:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.skip = 0  # body bytes of an over-long message still to pass
        self.skipped_message: Message | None = None
        self.resync = False
        self.skipped = 0
        self.suspect = False
        self.ts = 0


class PostgresDecoder:
    proto = PROTO

    def __init__(self) -> None:
        self.flows = [_Flow(), _Flow()]
        self.client: int | None = None
        self.awaiting_startup = True  # the client's next message has no type byte
        self.awaiting_ssl_answer = False  # the server's next byte is a bare 'S' or 'N'

    def feed(self, flow: int, data: bytes, ts_ns: int) -> Iterator[Output]:
        state = self.flows[flow]
        if self.client is None:
            self.client = flow
            self.awaiting_startup = looks_like(data[:8]) if len(data) >= 8 else True
        if not state.buf:
            state.ts = ts_ns
        state.buf += data
        buf = state.buf
        pos = 0
        names = FRONTEND if flow == self.client else BACKEND
        while pos < len(buf):
            if state.skip:
                take = min(state.skip, len(buf) - pos)
                state.skip -= take
                pos += take
                if not state.skip and state.skipped_message is not None:
                    yield self._done(state, state.skipped_message)
                    state.skipped_message = None
                continue
            if state.resync:
                found = self._plausible(buf, pos, names)
                state.skipped += found - pos
                pos = found
                if pos >= len(buf) - 4:
                    break
                yield Note(flow, ts_ns, f"skipped {state.skipped} bytes to a plausible message")
                state.resync, state.skipped = False, 0
            if flow != self.client and self.awaiting_ssl_answer:
                self.awaiting_ssl_answer = False
                answer = text(buf[pos:pos + 1])
                yield Message(flow, ts_ns, {"type": "SSLResponse", "accepted": answer == "S"},
                              f"SSLResponse {quoted(answer)}")
                pos += 1
                continue
            startup = flow == self.client and self.awaiting_startup
            header = 4 if startup else 5
            if len(buf) - pos < header:
                break
            kind = None if startup else buf[pos]
            length, = struct.unpack_from(">i", buf, pos + header - 4)
            name = "Startup" if kind is None else names.get(kind)
            if name is None or length < 4 or length > _MAX_LENGTH:
                what = f"type byte 0x{kind:02x}" if name is None and kind is not None else f"length {length}"
                yield Note(flow, ts_ns, f"malformed message ({what}); resynchronising")
                state.resync, state.skipped = True, 1
                pos += 1
                continue
            total = header - 4 + length
            if length - 4 > MAX_HELD:
                pos += header
                state.skip = length - 4
                state.skipped_message = Message(flow, state.ts, {"type": name, "length": length},
                                                f"{name} ({length} B, not held)")
                state.ts = ts_ns
                continue
            if len(buf) - pos < total:
                break
            body = bytes(buf[pos + header:pos + total])
            pos += total
            yield self._done(state, self._message(flow, kind, name, length, body, state.ts))
            state.ts = ts_ns
        del buf[:pos]

    def _plausible(self, buf: bytearray, pos: int, names: dict[int, str]) -> int:
        for i in range(pos, len(buf) - 4):
            if buf[i] in names:
                length, = struct.unpack_from(">i", buf, i + 1)
                if 4 <= length <= MAX_HELD:
                    return i
        return max(pos, len(buf) - 4)

    def _done(self, state: _Flow, message: Output) -> Output:
        if isinstance(message, Note):
            return message
        message.incomplete = message.incomplete or state.suspect
        state.suspect = False
        return message

    def _message(self, flow: int, kind: int | None, name: str, length: int, data: bytes,
                 ts_ns: int) -> Message | Note:
        fields: dict = {"type": name, "length": length}
        summary = name
        body = _Body(data)
        try:
            if kind is None:
                code = body.int(4)
                self.awaiting_startup = code in (SSL_REQUEST, GSSENC_REQUEST)
                if code == SSL_REQUEST:
                    fields["type"] = summary = "SSLRequest"
                    self.awaiting_ssl_answer = True
                elif code == GSSENC_REQUEST:
                    fields["type"] = summary = "GSSENCRequest"
                elif code == CANCEL_REQUEST:
                    fields["type"] = summary = "CancelRequest"
                else:
                    fields["protocol"] = f"{code >> 16}.{code & 0xFFFF}"
                    params: dict[str, str] = {}
                    while body.pos < len(data) and data[body.pos] != 0:
                        key = body.cstring()
                        params[key] = body.cstring()
                    fields["parameters"] = params
                    summary = "Startup " + " ".join(f"{k}={v}" for k, v in params.items())
            elif flow == self.client:
                if name == "Query":
                    fields["query"] = body.cstring()
                    summary = f"Query {fields['query']}"
                elif name == "Parse":
                    fields["statement"] = body.cstring()
                    fields["query"] = body.cstring()
                    summary = f"Parse {fields['statement'] or '(unnamed)'}: {fields['query']}"
                elif name == "Bind":
                    fields["portal"] = body.cstring()
                    fields["statement"] = body.cstring()
                    formats = [body.int(2) for _ in range(body.count("parameter formats", 2))]
                    values: list[str | None] = []
                    for number in range(body.count("parameters", 4)):
                        size = body.int(4)
                        raw = body.skip(max(size, 0))
                        binary = formats and formats[number if len(formats) > 1 else 0] == 1
                        values.append(None if size < 0 else (raw.hex() if binary else text(raw)))
                    fields["parameters"] = values
                    summary = f"Bind {fields['statement'] or '(unnamed)'} {_listed(values)}"
                elif name == "Execute":
                    fields["portal"] = body.cstring()
                    fields["max_rows"] = body.int(4)
                    summary = f"Execute {fields['portal'] or '(unnamed)'}"
            else:
                if name == "RowDescription":
                    columns = []
                    for _ in range(body.count("fields", 19)):
                        column = body.cstring()
                        body.skip(18)  # table oid, column number, type oid, size, modifier, format
                        columns.append(column)
                    body.rest()
                    fields["columns"] = columns
                    summary = f"RowDescription {_listed(columns)}"
                elif name == "DataRow":
                    fields["values"] = body.count("values", 4)
                    for _ in range(fields["values"]):
                        body.skip(max(body.int(4), 0))  # -1 is NULL
                    body.rest()
                elif name == "CommandComplete":
                    fields["tag"] = body.cstring()
                    summary = f"CommandComplete {fields['tag']}"
                elif name in ("ErrorResponse", "NoticeResponse"):
                    error: dict[str, str] = {}
                    while body.pos < len(data) and data[body.pos] != 0:
                        code_letter = chr(data[body.pos])
                        body.pos += 1
                        error[_ERROR_FIELDS.get(code_letter, code_letter)] = body.cstring()
                    fields["error"] = error
                    summary = f"{name} {error.get('severity', '')} {error.get('code', '')} " \
                              f"{error.get('message', '')}"
                elif name == "ReadyForQuery":
                    fields["status"] = chr(data[0]) if data else ""
                elif name == "ParameterStatus":
                    fields["name"] = body.cstring()
                    fields["value"] = body.cstring()
                    summary = f"ParameterStatus {fields['name']}={fields['value']}"
                elif name == "Authentication":
                    fields["code"] = body.int(4)
                    summary = f"Authentication {fields['code']}"
        except _BadCount as exc:
            return Note(flow, ts_ns, f"malformed {fields['type']} message ({length} bytes): {exc}; skipped")
        except (IndexError, ValueError):
            return Note(flow, ts_ns, f"malformed {fields['type']} message ({length} bytes); skipped")
        return Message(flow, ts_ns, fields, summary)

    def gap(self, flow: int, size: int | None, ts_ns: int) -> Iterator[Output]:
        state = self.flows[flow]
        if size is None:
            state.suspect = state.suspect or bool(state.buf) or bool(state.skip)
            return
        if state.skip and not state.buf and size <= state.skip:
            state.skip -= size
            if state.skipped_message is not None:
                state.skipped_message.incomplete = True
            if not state.skip and state.skipped_message is not None:
                yield state.skipped_message
                state.skipped_message = None
            return
        yield from self._cut(flow, ts_ns)
        state.resync = True
        state.skipped = size

    def _cut(self, flow: int, ts_ns: int) -> Iterator[Output]:
        state = self.flows[flow]
        if state.skipped_message is not None:
            state.skipped_message.incomplete = True
            yield state.skipped_message
            state.skipped_message = None
        elif len(state.buf) >= 5 and not state.resync:
            names = FRONTEND if flow == self.client else BACKEND
            name = names.get(state.buf[0], f"0x{state.buf[0]:02x}")
            length, = struct.unpack_from(">i", state.buf, 1)
            yield Message(flow, state.ts, {"type": name, "length": length},
                          f"{name} ({len(state.buf) - 1} of {length + 1} B)", True)
        elif state.buf and not state.resync:
            yield Note(flow, ts_ns, f"{len(state.buf)} bytes of an unfinished message")
        state.buf.clear()
        state.skip = 0

    def finish(self, ts_ns: int) -> Iterator[Output]:
        for flow in FLOWS:
            yield from self._cut(flow, ts_ns)


def _listed(values: Sequence[str | None]) -> str:
    """`["a", NULL]`: decoded values for a summary, without Python's repr."""
    return "[" + ", ".join("NULL" if v is None else quoted(v) for v in values) + "]"
