"""HTTP/1.x: requests and responses, bodies by Content-Length, chunked or until close.

Bodies are counted, never held, so a 1 GiB Content-Length costs nothing; a
gap inside a body of known length is simply counted as body. Heads are
held up to MAX_HELD. After malformed bytes or a gap in a head the decoder
skips to the next line that starts a request or a response.
"""

import re
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from wtrec.tools.protocols.base import FLOWS, MAX_HELD, Message, Note, Output, duration_text, quoted, text

PROTO = "http"
METHODS = (b"GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|CONNECT|TRACE|PROPFIND|PROPPATCH|MKCOL|"
           b"COPY|MOVE|LOCK|UNLOCK|REPORT|SEARCH|PURGE")
# a target is anything but whitespace: a bad byte in it is shown (escaped), not a resync
_REQUEST_LINE = re.compile(rb"(" + METHODS + rb") (\S+) (HTTP/1\.[019])\r?\Z")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[019]) ([0-9]{3})(?: ([^\r\n]*))?\r?\Z")
_MESSAGE_START = re.compile(rb"(?:" + METHODS + rb") \S+ HTTP/1\.[019]\r?\n|HTTP/1\.[019] [0-9]{3}[ \r\n]")
_LOOKS_LIKE = re.compile(rb"(?:" + METHODS + rb") [/*a-zA-Z]|HTTP/1\.[019] [0-9]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,15})(?:;[^\r\n]*)?\r?\Z")
_KEEP_FOR_RESYNC = 64  # a start line cut between two events is still found


def looks_like(first: bytes) -> bool:
    """Whether a flow's first bytes start an HTTP/1.x request or response."""
    return bool(_LOOKS_LIKE.match(first))


could_answer = looks_like  # a response is as plain a sign as a request


@dataclass
class _Flow:
    buf: bytearray = field(default_factory=bytearray)
    state: str = "head"  # head, length, chunk-size, chunk-data, chunk-end, trailer, close, resync
    remaining: int = 0
    message: Message | None = None
    body_len: int = 0
    suspect: bool = False  # records were lost while this message was open
    skipped: int = 0
    skip_ts: int = 0
    skip_reason: str = ""  # why the bytes being skipped are skipped, when not "no HTTP message"
    start_ts: int = 0  # time of the event that held the first unconsumed byte


class Http1Decoder:
    """One HTTP/1.x connection; responses learn their latency from the other flow's requests."""

    proto = PROTO

    def __init__(self) -> None:
        self.flows = [_Flow(), _Flow()]
        # per flow: (ts_ns, method) of requests it sent that still await a response
        self.pending: list[deque[tuple[int, str]]] = [deque(), deque()]

    def feed(self, flow: int, data: bytes, ts_ns: int) -> Iterator[Output]:
        state = self.flows[flow]
        if not state.buf:
            state.start_ts = ts_ns
        state.buf += data
        yield from self._run(flow, state, ts_ns)

    def gap(self, flow: int, size: int | None, ts_ns: int) -> Iterator[Output]:
        state = self.flows[flow]
        if size is None:
            state.suspect = state.suspect or state.message is not None or bool(state.buf)
            return
        if state.state == "close":
            state.body_len += size
            return
        if state.state in ("length", "chunk-data") and not state.buf and size <= state.remaining:
            state.remaining -= size  # body bytes the snaplen cut: counted, nothing to parse
            state.body_len += size
            if state.message is not None:
                state.message.fields["body_captured"] = False
            if state.remaining == 0 and state.state == "length":
                yield self._complete(flow, state)
            elif state.remaining == 0:
                state.state = "chunk-end"
            return
        if state.state != "resync":
            yield from self._cut(flow, state, ts_ns, f"{size} bytes missing")
            state.state = "resync"
            state.skip_ts = ts_ns

    def finish(self, ts_ns: int) -> Iterator[Output]:
        for flow in FLOWS:
            state = self.flows[flow]
            if state.state == "close" and state.message is not None:
                yield self._complete(flow, state, incomplete=state.suspect)
            elif state.state == "resync":
                state.skipped += len(state.buf)  # the tail kept in case a start line began in it
                state.buf.clear()
                yield from self._skipped_note(flow, state)
            elif state.message is not None or state.buf:
                yield from self._cut(flow, state, ts_ns, None)

    def _cut(self, flow: int, state: _Flow, ts_ns: int, why: str | None) -> Iterator[Output]:
        """The open message ends here unfinished."""
        if state.message is None and state.buf:
            head = self._start_line(flow, state, bytes(state.buf.split(b"\n", 1)[0]), state.start_ts)
            if head is None:
                yield Note(flow, ts_ns, f"{len(state.buf)} bytes that start no HTTP message"
                           + (f" ({why})" if why else ""))
            state.message = head
        if state.message is not None:
            yield self._complete(flow, state, incomplete=True)
        state.buf.clear()
        state.state = "head"

    def _run(self, flow: int, state: _Flow, ts_ns: int) -> Iterator[Output]:
        buf = state.buf
        pos = 0
        while pos < len(buf):
            if state.state == "resync":
                if not state.skipped and not state.skip_reason:
                    state.skip_ts = ts_ns
                match = _MESSAGE_START.search(buf, pos)
                if match is None:
                    keep = max(pos, len(buf) - _KEEP_FOR_RESYNC)
                    state.skipped += keep - pos
                    pos = keep
                    break
                state.skipped += match.start() - pos
                pos = match.start()
                yield from self._skipped_note(flow, state)
                state.state = "head"
            elif state.state == "head":
                end = _HEAD_END.search(buf, pos)
                if end is None:
                    if len(buf) - pos > MAX_HELD:
                        pos = yield from self._oversized_head(flow, state, pos, ts_ns)
                        continue
                    break
                if pos:  # something before it was consumed in this event: it starts here
                    state.start_ts = ts_ns
                head = bytes(buf[pos:end.start()])
                pos = end.end()
                yield from self._head(flow, state, head, state.start_ts)
            elif state.state in ("length", "chunk-data", "close"):
                take = len(buf) - pos if state.state == "close" else min(state.remaining, len(buf) - pos)
                pos += take
                state.body_len += take
                if state.state == "close":
                    continue
                state.remaining -= take
                if state.remaining == 0:
                    if state.state == "length":
                        yield self._complete(flow, state)
                    else:
                        state.state = "chunk-end"
            else:  # chunk-size, chunk-end, trailer: one line at a time
                newline = buf.find(b"\n", pos)
                if newline < 0:
                    if len(buf) - pos > 1024:
                        yield from self._malformed(flow, state, ts_ns, "a chunk line over 1024 bytes")
                        continue
                    break
                line = bytes(buf[pos:newline])
                pos = newline + 1
                yield from self._chunk_line(flow, state, line, ts_ns)
        del buf[:pos]

    def _oversized_head(self, flow: int, state: _Flow, pos: int, ts_ns: int) -> Generator[Output, None, int]:
        """A head over MAX_HELD: its start line comes out incomplete, the rest is skipped.

        Returns where to go on: past the start line (or past all that is held
        when the line itself is that long), so the resync after it cannot find
        the same start line again. The skip is said once, when it ends.
        """
        buf = state.buf
        newline = buf.find(b"\n", pos)
        end = len(buf) if newline < 0 else newline + 1
        line = bytes(buf[pos:newline])
        message = None if newline < 0 else self._start_line(flow, state, line, state.start_ts)
        if message is not None:
            fields = message.fields
            fields["headers"] = None  # not kept
            if "method" in fields:
                self.pending[flow].append((state.start_ts, fields["method"]))
            else:  # a final response answers the oldest request, as in _head
                pending = self.pending[1 - flow]
                request = pending.popleft() if pending and fields["status"] >= 200 else None
                fields["latency_ns"] = state.start_ts - request[0] if request else None
            state.message, state.body_len = message, 0
            yield self._complete(flow, state, incomplete=True)
        state.state = "resync"
        state.skip_ts = ts_ns
        state.skip_reason = f"a header section over {MAX_HELD} bytes"
        if message is not None:
            state.skip_reason = "the rest of " + state.skip_reason
        state.skipped += 0 if message is not None else end - pos
        return end

    def _chunk_line(self, flow: int, state: _Flow, line: bytes, ts_ns: int) -> Iterator[Output]:
        if state.state == "chunk-end":
            if line.strip(b"\r"):
                yield from self._malformed(flow, state, ts_ns, "chunk data longer than its size")
            else:
                state.state = "chunk-size"
        elif state.state == "chunk-size":
            match = _CHUNK_SIZE.match(line)
            if match is None:
                yield from self._malformed(flow, state, ts_ns, "a bad chunk size line")
                return
            size = int(match[1], 16)
            if size == 0:
                state.state = "trailer"
            else:
                state.state, state.remaining = "chunk-data", size
        elif not line.strip(b"\r"):  # the blank line after the trailer
            yield self._complete(flow, state)

    def _malformed(self, flow: int, state: _Flow, ts_ns: int, what: str) -> Iterator[Output]:
        yield Note(flow, ts_ns, f"malformed HTTP: {what}; resynchronising")
        if state.message is not None:
            yield self._complete(flow, state, incomplete=True)
        state.state = "resync"

    def _skipped_note(self, flow: int, state: _Flow) -> Iterator[Output]:
        if state.skip_reason:
            yield Note(flow, state.skip_ts, f"{state.skip_reason}; skipped {state.skipped} bytes")
        elif state.skipped:
            yield Note(flow, state.skip_ts, f"skipped {state.skipped} bytes that start no HTTP message")
        state.skipped = 0
        state.skip_reason = ""

    def _start_line(self, flow: int, state: _Flow, line: bytes, ts_ns: int) -> Message | None:
        line = line.rstrip(b"\r") + b"\r"
        request = _REQUEST_LINE.match(line)
        if request:
            method, target = text(request[1]), text(request[2])
            return Message(flow, ts_ns, {"method": method, "target": target, "version": text(request[3])},
                           f"{method} {target} {text(request[3])}")
        status = _STATUS_LINE.match(line)
        if status:
            code = int(status[2])
            reason = text(status[3] or b"")
            return Message(flow, ts_ns, {"status": code, "reason": reason, "version": text(status[1])},
                           f"{code} {reason}".rstrip())
        return None

    def _head(self, flow: int, state: _Flow, head: bytes, ts_ns: int) -> Iterator[Output]:
        lines = head.split(b"\n")
        message = self._start_line(flow, state, lines[0], ts_ns)
        if message is None:
            yield from self._malformed(flow, state, ts_ns, "no request or status line")
            return
        headers: list[list[str]] = []
        for raw in lines[1:]:
            name, colon, value = raw.rstrip(b"\r").partition(b":")
            if not colon or not name or name != name.strip():
                yield Note(flow, ts_ns, f"malformed HTTP header line {quoted(text(raw[:60]))} ignored")
                continue
            headers.append([text(name), text(value.strip())])
        message.fields["headers"] = headers
        message.fields["body_len"] = 0
        state.message, state.body_len = message, 0
        fields = message.fields
        by_name = {name.lower(): value for name, value in headers}
        if "status" in fields:
            code = fields["status"]
            request = None
            pending = self.pending[1 - flow]
            if pending and code >= 200:
                request = pending.popleft()
            elif pending:
                request = pending[0]
            fields["latency_ns"] = ts_ns - request[0] if request else None
            no_body = code < 200 or code in (204, 304) or (request is not None and request[1] == "HEAD")
            if request is not None and request[1] == "CONNECT" and 200 <= code < 300:
                no_body = True  # what follows is a tunnel, not HTTP
        else:
            self.pending[flow].append((ts_ns, fields["method"]))
            no_body = False
        encoding = by_name.get("transfer-encoding", "").lower()
        length = by_name.get("content-length")
        if no_body:
            yield self._complete(flow, state)
        elif encoding.endswith("chunked"):
            state.state = "chunk-size"
        elif length is not None:
            if not length.isdigit() or len(length) > 18:
                yield from self._malformed(flow, state, ts_ns, f"Content-Length {quoted(length[:30])}")
                return
            state.remaining = int(length)
            state.state = "length"
            if state.remaining == 0:
                yield self._complete(flow, state)
        elif "status" in fields:
            state.state = "close"  # the body runs until the connection closes
        else:
            yield self._complete(flow, state)

    def _complete(self, flow: int, state: _Flow, incomplete: bool = False) -> Message:
        message = state.message
        assert message is not None  # callers check; an internal invariant, not input
        state.message = None
        message.fields["body_len"] = state.body_len
        message.incomplete = incomplete or state.suspect
        state.suspect = False
        state.state = "head"
        state.body_len = 0
        fields = message.fields
        if "status" in fields:
            details = []
            if fields.get("latency_ns") is not None:
                details.append(duration_text(fields["latency_ns"]))
            details.append(f"{state.body_len or fields['body_len']} B")
            message.summary += f" ({', '.join(details)})"
        elif fields["body_len"]:
            message.summary += f" ({fields['body_len']} B)"
        return message
