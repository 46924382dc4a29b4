"""HTTP/2 (h2c, or TLS plaintext): one message per frame, HEADERS decoded with HPACK.

Frames are parsed by hyperframe and header blocks decoded by hpack (both
come with the `h2` package; this module is their only user). Each flow has
its own HPACK decoder, carried across the whole connection, as the peers
keep it. DATA payloads are counted, not held. HPACK state cannot survive
lost bytes, so after a gap that is not inside a DATA frame, decoding of
that flow stops with a note rather than guess.
"""

import re
import struct
from collections.abc import Iterator

import hpack
from hpack.exceptions import HPACKError
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PushPromiseFrame,
    SettingsFrame,
)

from wtrec.tools.protocols.base import FLOWS, MAX_HELD, Message, Note, Output, duration_text, text

PROTO = "http2"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_NAMES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS",
                5: "PUSH_PROMISE", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE", 9: "CONTINUATION",
                10: "ALTSVC", 12: "ORIGIN", 16: "PRIORITY_UPDATE"}
_MAX_FRAME = (1 << 24) - 1


def looks_like(first: bytes) -> bool:
    """The client preface, or a server's first SETTINGS frame on stream 0."""
    if first.startswith(PREFACE[:len(first)]) and len(first) >= 16:
        return True
    return len(first) >= 9 and first[3] == 4 and first[4] in (0, 1) and first[5:9] == bytes(4) \
        and (first[0] << 16 | first[1] << 8 | first[2]) % 6 == 0


could_answer = looks_like  # a server's first frame is its SETTINGS


class _Flow:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.preface_checked = False
        self.hpack = hpack.Decoder()
        self.skip = 0  # DATA payload bytes still to count
        self.data_message: Message | None = None
        self.block: bytearray | None = None  # a header block awaiting CONTINUATION
        self.block_message: Message | None = None
        self.stopped = False
        self.suspect = False
        self.frame_ts = 0


class Http2Decoder:
    proto = PROTO

    def __init__(self) -> None:
        self.flows = [_Flow(), _Flow()]
        self.requests: dict[int, int] = {}  # stream id -> time its request HEADERS began

    def feed(self, flow: int, data: bytes, ts_ns: int) -> Iterator[Output]:
        state = self.flows[flow]
        if state.stopped:
            return
        if not state.buf:
            state.frame_ts = ts_ns
        state.buf += data
        buf = state.buf
        pos = 0
        if not state.preface_checked:
            if len(buf) < len(PREFACE) and PREFACE.startswith(bytes(buf)):
                return
            state.preface_checked = True
            if buf.startswith(PREFACE):
                pos = len(PREFACE)
        while pos < len(buf):
            if state.skip:
                take = min(state.skip, len(buf) - pos)
                state.skip -= take
                pos += take
                if not state.skip and state.data_message is not None:
                    yield self._done(state.data_message, state)
                    state.data_message = None
                continue
            if len(buf) - pos < 9:
                break
            try:
                frame, length = Frame.parse_frame_header(memoryview(bytes(buf[pos:pos + 9])))
            except HyperframeError as exc:
                yield from self._stop(flow, ts_ns, f"a bad frame header ({_reason(exc)})")
                return
            if length > _MAX_FRAME:
                yield from self._stop(flow, ts_ns, f"a frame of {length} bytes")
                return
            if isinstance(frame, DataFrame):
                pos += 9
                message = Message(flow, state.frame_ts, self._base(frame, length),
                                  f"DATA stream {frame.stream_id} ({length} B"
                                  + (", END_STREAM)" if "END_STREAM" in frame.flags else ")"))
                state.skip = length
                if length == 0:
                    yield self._done(message, state)
                else:
                    state.data_message = message
                state.frame_ts = ts_ns
                continue
            if length > MAX_HELD:
                yield from self._stop(flow, ts_ns, f"{_a(_name(frame))} frame of {length} bytes, more "
                                      f"than the {MAX_HELD} a decoder holds")
                return
            if len(buf) - pos < 9 + length:
                break
            body = memoryview(bytes(buf[pos + 9:pos + 9 + length]))
            pos += 9 + length
            try:
                frame.parse_body(body)
            except HyperframeError as exc:
                yield Note(flow, ts_ns,
                           f"malformed {_name(frame)} frame on stream {frame.stream_id}: {_reason(exc)}")
                state.frame_ts = ts_ns
                continue
            yield from self._frame(flow, state, frame, length)
            state.frame_ts = ts_ns
        del buf[:pos]

    def _base(self, frame: Frame, length: int) -> dict:
        return {"stream_id": frame.stream_id, "frame": _name(frame), "flags": sorted(frame.flags),
                "length": length}

    def _done(self, message: Message, state: _Flow) -> Message:
        message.incomplete = message.incomplete or state.suspect
        state.suspect = False
        return message

    def _frame(self, flow: int, state: _Flow, frame: Frame, length: int) -> Iterator[Output]:
        message = Message(flow, state.frame_ts, self._base(frame, length),
                          f"{_name(frame)} stream {frame.stream_id}")
        if isinstance(frame, SettingsFrame):
            message.fields["settings"] = {str(k): v for k, v in frame.settings.items()}
            table = frame.settings.get(SettingsFrame.HEADER_TABLE_SIZE)
            if table is not None:  # the peer's encoder may now use a table this big
                self.flows[1 - flow].hpack.max_allowed_table_size = table
        if isinstance(frame, HeadersFrame | PushPromiseFrame):
            state.block = bytearray(frame.data)
            state.block_message = message
        elif isinstance(frame, ContinuationFrame):
            if state.block is None or state.block_message is None:
                yield Note(flow, message.ts_ns, f"CONTINUATION on stream {frame.stream_id} without HEADERS")
                return
            state.block += frame.data
            if len(state.block) > MAX_HELD:
                yield from self._stop(flow, message.ts_ns, "a header block over the limit")
                return
        if state.block is not None and "END_HEADERS" in frame.flags:
            # the HEADERS message is still unprinted when its last CONTINUATION completes it
            yield from self._headers(flow, state, state.block_message, bytes(state.block))
            state.block = state.block_message = None
        yield self._done(message, state)

    def _headers(self, flow: int, state: _Flow, message: Message | None, block: bytes) -> Iterator[Output]:
        if message is None:
            return
        try:
            headers = [[text(name), text(value)] for name, value in state.hpack.decode(block, raw=True)]
        except (HPACKError, ValueError, IndexError) as exc:
            yield from self._stop(flow, message.ts_ns,
                                  f"HPACK could not decode a header block ({_reason(exc)})")
            return
        message.fields["headers"] = headers
        pseudo = {name: value for name, value in headers if name.startswith(":")}
        stream = message.fields["stream_id"]
        if ":method" in pseudo:
            self.requests[stream] = message.ts_ns
            message.summary += f" {pseudo[':method']} {pseudo.get(':path', '')}"
        elif ":status" in pseudo:
            message.summary += f" {pseudo[':status']}"
            started = self.requests.pop(stream, None)
            if started is not None:
                message.fields["latency_ns"] = message.ts_ns - started
                message.summary += f" ({duration_text(message.ts_ns - started)})"

    def _stop(self, flow: int, ts_ns: int, why: str) -> Iterator[Output]:
        state = self.flows[flow]
        state.stopped = True
        state.buf.clear()
        yield Note(flow, ts_ns, f"HTTP/2 decoding of this direction stops: {why}")

    def gap(self, flow: int, size: int | None, ts_ns: int) -> Iterator[Output]:
        state = self.flows[flow]
        if state.stopped:
            return
        if size is None:
            state.suspect = True
            return
        if state.skip and not state.buf and size <= state.skip:
            state.skip -= size  # DATA payload the snaplen cut: counted
            if not state.skip and state.data_message is not None:
                yield self._done(state.data_message, state)
                state.data_message = None
            return
        yield from self.finish_flow(flow, ts_ns)
        yield from self._stop(flow, ts_ns, f"{size} bytes missing; HPACK state and framing are lost")

    def finish_flow(self, flow: int, ts_ns: int) -> Iterator[Output]:
        state = self.flows[flow]
        if state.data_message is not None:
            state.data_message.incomplete = True
            yield state.data_message
            state.data_message = None
        elif len(state.buf) >= 9 and not state.stopped:
            length = int.from_bytes(state.buf[:3], "big")
            kind, = struct.unpack_from("B", state.buf, 3)
            stream = int.from_bytes(state.buf[5:9], "big") & 0x7FFFFFFF
            name = _FRAME_NAMES.get(kind, f"0x{kind:02x}")
            yield Message(flow, state.frame_ts, {"stream_id": stream, "frame": name, "flags": [],
                                                 "length": length},
                          f"{name} stream {stream} ({len(state.buf) - 9} of {length} B)", True)
        elif state.buf and not state.stopped:
            yield Note(flow, ts_ns, f"{len(state.buf)} bytes of a frame header at the end")
        state.buf.clear()

    def finish(self, ts_ns: int) -> Iterator[Output]:
        for flow in FLOWS:
            yield from self.finish_flow(flow, ts_ns)


def _name(frame: Frame) -> str:
    return _FRAME_NAMES.get(frame.type if frame.type is not None else -1,
                            f"0x{getattr(frame, 'type', 0) or 0:02x}")


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def _reason(exc: Exception) -> str:
    """A library's error text without Python object reprs (hpack puts `<memory at 0x…>` in some)."""
    cleaned = " ".join(_OBJECT_REPR.sub("", str(exc)).split()).rstrip(" :")
    return cleaned or type(exc).__name__


def _a(name: str) -> str:
    """`a HEADERS`, `an ALTSVC`: the article as the frame name is read aloud."""
    return f"an {name}" if name[:1] in "AEIO" else f"a {name}"
