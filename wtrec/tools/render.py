"""Turns records into text for a human or a JSON consumer.

The one place captured bytes become text. Every byte that is not printable
ASCII is escaped, so nothing from a capture (ESC, other control bytes,
Unicode tricks) ever reaches a terminal raw.
"""

import base64
import bisect
import errno
import functools
import json
import re
import time
from collections.abc import Iterable, Iterator

from wtrec.records import End, FdIdentity, FdInfo, Filters, Header, IoEvent, Lost, Record
from wtrec.tools.fd_names import FdNames

_ESCAPES = {0x5C: "\\\\", 0x22: '\\"', 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x00: "\\0"}
_BYTE_TEXT = [
    _ESCAPES.get(b, chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in range(256)
]
_GUTTER = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in range(256))

BOLD, RED, RESET = "\x1b[1m", "\x1b[31m", "\x1b[0m"
WRAP = 76


_NEEDS_ESCAPE = re.compile(rb'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_PLAIN = bytes(b for b in range(256) if not _NEEDS_ESCAPE.match(bytes([b])))  # kept as is


def _escape_match(match: re.Match) -> bytes:
    return _BYTE_TEXT[match[0][0]].encode()


def escape_bytes(data: bytes) -> str:
    """Printable ASCII as is, everything else as \\n, \\t, \\xNN escapes."""
    if not data.translate(None, _PLAIN):  # nothing to escape: one C pass, no regex
        return data.decode("ascii")
    # Runs of plain text are copied by the regex engine; only escapes cost a call.
    return _NEEDS_ESCAPE.sub(_escape_match, data).decode("ascii")


def escape_text(text: str) -> str:
    """escape_bytes for a text field from a capture (syscall, addresses, header strings)."""
    if len(text) <= 256:  # the short ones (syscall names, addresses) repeat: remembered
        return _escape_short_text(text)
    return escape_bytes(text.encode("utf-8", "surrogateescape"))


@functools.lru_cache(maxsize=4096)
def _escape_short_text(text: str) -> str:
    return escape_bytes(text.encode("utf-8", "surrogateescape"))


_TERMINAL_TEXT = list(_BYTE_TEXT)
_TERMINAL_TEXT[0x0A] = "\n"
_TERMINAL_TEXT[0x09] = "\t"
_TERMINAL_TEXT[0x5C] = "\\"
_TERMINAL_TEXT[0x22] = '"'


def terminal_text(data: bytes) -> str:
    """Like escape_bytes, but newlines, tabs, quotes and backslashes stay as they are.

    For running text (replay, responses): still nothing but printable ASCII,
    newline and tab reaches the terminal.
    """
    return "".join(map(_TERMINAL_TEXT.__getitem__, data))


_LINES = re.compile(rb"[^\n]*\n|[^\n]+")  # each line keeps its newline; only \n breaks
_ESCAPE = re.compile(r"\\x[0-9a-f]{2}|\\.")  # in escaped text: what one byte became


def _wrap(text: str, width: int) -> list[str]:
    """Cuts escaped text into pieces of at most `width` without splitting an escape.

    Each piece is as long as it can be: a cut that would fall inside an
    escape moves back to the escape's start.
    """
    if len(text) <= width:
        return [text]
    if "\\" not in text:
        return [text[i:i + width] for i in range(0, len(text), width)]
    spans = [m.span() for m in _ESCAPE.finditer(text)]
    starts = [start for start, _end in spans]
    pieces: list[str] = []
    begin = 0
    while len(text) - begin > width:
        cut = begin + width
        index = bisect.bisect_left(starts, cut) - 1  # the last escape that starts before the cut
        if index >= 0 and spans[index][1] > cut:
            cut = spans[index][0]
        pieces.append(text[begin:cut])
        begin = cut
    pieces.append(text[begin:])
    return pieces


RAW_SLICE = 4096  # payload bytes escaped at a time, so one huge line never becomes one string


def iter_quoted_lines(data: bytes, width: int = WRAP) -> Iterator[str]:
    """The escaped payload as quoted strings, broken after newlines and at `width`.

    Made piece by piece, so a payload of any size costs a few KiB at a time.
    """
    if not data:
        yield '""'
        return
    for match in _LINES.finditer(data):
        line = match[0]
        carry = ""  # the last, possibly unfinished piece of the slice before
        for start in range(0, len(line), RAW_SLICE):
            pieces = _wrap(carry + escape_bytes(line[start:start + RAW_SLICE]), width)
            carry = pieces.pop() if start + RAW_SLICE < len(line) else ""
            for piece in pieces:
                yield '"' + piece + '"'


SMALL_PAYLOAD = 64 << 10  # rendered in one go; bigger ones piece by piece


def quoted_lines(data: bytes, width: int = WRAP) -> list[str]:
    """iter_quoted_lines as a list (built in one go for a payload of up to 64 KiB)."""
    if len(data) > SMALL_PAYLOAD:
        return list(iter_quoted_lines(data, width))
    return ['"' + piece + '"' for piece in _pieces(data, width)]


def quoted_block(data: bytes, indent: str, width: int = WRAP) -> str:
    """"\n".join(indent + line for line in quoted_lines(data)), for a payload of up to
    SMALL_PAYLOAD bytes, made by one join: show's body of every event."""
    return indent + '"' + ('"\n' + indent + '"').join(_pieces(data, width)) + '"'


def _pieces(data: bytes, width: int) -> list[str]:
    """The escaped payload cut as quoted_lines cuts it, without the quotes."""
    pieces: list[str] = []
    parts = data.split(b"\n")  # each line keeps its newline (escaped), as _LINES cuts them
    last = len(parts) - 1
    for number, part in enumerate(parts):
        if number < last:
            text = escape_bytes(part) + "\\n"
        elif part:
            text = escape_bytes(part)
        else:
            break
        if len(text) <= width:
            pieces.append(text)
        elif "\\" not in text:
            pieces += [text[i:i + width] for i in range(0, len(text), width)]
        else:
            pieces += _wrap(text, width)
    return pieces or [""]


def iter_hex_lines(data: bytes) -> Iterator[str]:
    """A hexdump -C style dump: offset, two groups of 8 bytes, ASCII gutter."""
    for offset in range(0, len(data), 16):
        row = data[offset:offset + 16]
        left = " ".join(f"{b:02x}" for b in row[:8])
        right = " ".join(f"{b:02x}" for b in row[8:])
        gutter = "".join(_GUTTER[b] for b in row)
        yield f"{offset:08x}  {left:<23}  {right:<23}  |{gutter}|"


def hex_lines(data: bytes) -> list[str]:
    """iter_hex_lines as a list."""
    return list(iter_hex_lines(data))


def format_clock(header: Header | None, ts_ns: int) -> str:
    """Local wall-clock time of an event, to the nanosecond."""
    wall = header.wall_ns(ts_ns) if header else ts_ns
    seconds, nanos = divmod(wall, 1_000_000_000)
    return _clock_seconds(seconds) + f".{nanos:09d}"


@functools.lru_cache(maxsize=64)
def _clock_seconds(seconds: int) -> str:
    """HH:MM:SS of a second (events come many to a second: asked for again and again)."""
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def comm_text(comm: bytes) -> str:
    return escape_bytes(comm)


def describe_result(event: IoEvent) -> str:
    """'count 4096, wrote 1200', 'count 512, received 22', 'count 9, failed: EAGAIN'."""
    text = f"count {event.count}"
    if event.ret is None:
        return text
    if event.tls is not None and event.ret <= 0:
        # A library's own return value, not -errno (SSL_read -1: see SSL_get_error).
        return f"{text}, returned {event.tls.raw_ret} (no data)"
    if event.ret < 0:
        name = errno.errorcode.get(-event.ret, f"errno {-event.ret}")
        suffix = " (payload not sent)" if event.direction == "out" else ""
        return f"{text}, failed: {name}{suffix}"
    verb = "received" if event.direction == "in" else "wrote"
    return f"{text}, {verb} {event.ret}"


LIBRARY_NAMES = {"openssl": "OpenSSL", "gnutls": "GnuTLS", "wolfssl": "wolfSSL"}


SOCKET_KINDS = frozenset({"tcp", "udp", "unix", "socket"})


def layer_note(event: IoEvent, tls_capture: bool, identity: FdIdentity | None) -> str:
    """'  [tls OpenSSL]', '  [syscall, TLS ciphertext]', '  [syscall]' or '' (no TLS in sight).

    A syscall made inside a TLS call is its ciphertext when on a socket; on
    anything else (node reads /etc/localtime in its first SSL_write) it is
    only "inside" the call.
    """
    if event.tls is not None:
        library = LIBRARY_NAMES.get(event.tls.library, event.tls.library)
        return f"  [tls {escape_text(library)}]"
    if event.tls_call_ns is not None:
        if identity is not None and identity.kind in SOCKET_KINDS:
            return "  [syscall, TLS ciphertext]"
        return "  [syscall, inside a TLS call]"
    return "  [syscall]" if tls_capture or event.layer != "syscall" else ""


class TextRenderer:
    """show's default and --hex views: a block per event."""

    def __init__(self, header: Header | None = None, hex_view: bool = False,
                 color: bool = False):
        self.header = header
        self.hex_view = hex_view
        self.color = color
        self.fds = FdNames()
        self.tls_capture = header is not None and header.filters.tls

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text

    def fd_info(self, info: FdInfo) -> Iterator[str]:
        self.fds.learn(info)
        return iter(())

    def event(self, event: IoEvent) -> Iterator[str]:
        captured = len(event.data)
        title = (f"{format_clock(self.header, event.ts_ns)}  {comm_text(event.comm)}  "
                 f"pid {event.pid}  tid {event.tid}  uid {event.uid}")
        if event.seq is not None:
            title += f"  #{event.seq}"
        identity = self.fds.get(event.pid, event.fd)
        where = f"fd {event.fd}"
        if identity is not None:
            where += f" ({escape_text(identity.describe())})"
        detail = f"  {escape_text(event.syscall)} {where}  {describe_result(event)}"
        if event.truncated:
            detail += f", captured {captured} (truncated: {captured} of {event.expected} bytes)"
        elif event.ret is None:
            detail += f"  captured {captured}"
        detail += layer_note(event, self.tls_capture, identity)
        yield self._paint(BOLD, title)
        yield detail
        if len(event.data) <= SMALL_PAYLOAD:  # the body as one string: one step, not one a line
            if not self.hex_view:
                yield quoted_block(event.data, "  ")
            elif event.data:
                yield "  " + "\n  ".join(hex_lines(event.data))
        else:
            body = iter_hex_lines(event.data) if self.hex_view else iter_quoted_lines(event.data)
            for line in body:
                yield "  " + line
        yield ""

    def lost(self, lost: Lost) -> Iterator[str]:
        text = (f"-- {lost.count} events lost ({escape_text(lost.source)} buffer full) "
                f"at {format_clock(self.header, lost.ts_ns)} --")
        yield self._paint(RED, text)
        yield ""


def _tls_filters(f: Filters) -> dict:
    """The header's record --tls keys (1.4), only when TLS was traced: other headers unchanged."""
    if not f.tls:
        return {}
    return {"tls": True, "tls_targets": [{"path": path, "library": family,
                                          "entry_points": list(symbols)}
                                         for path, family, symbols in f.tls_targets]}


def header_dict(h: Header) -> dict:
    """A header as plain JSON-ready data, provenance included."""
    f = h.filters
    return {
        "format": f"{h.format_major}.{h.format_minor}", "tool_version": h.tool_version,
        "host": h.host, "kernel": h.kernel, "start_ns": h.start_ns, "argv": list(h.argv),
        "filters": {"comms": list(f.comms), "pids": list(f.pids), "all": f.all,
                    "syscalls": list(f.syscalls), "follow": f.follow,
                    "command": list(f.command), **_tls_filters(f)},
        "snaplen": h.snaplen, "buffer": h.buffer,
        "provenance": [{"op": d.op, "tool_version": d.tool_version, "time_ns": d.time_ns,
                        "argv": list(d.argv), "notes": dict(d.notes),
                        "inputs": [header_dict(i) for i in d.inputs]} for d in h.provenance],
        "series": None if h.series is None else {"id": h.series.id, "index": h.series.index},
    }



class JsonRenderer:
    """show --json: one JSON object per line, payload as base64 (+ text if UTF-8)."""

    def __init__(self, header: Header | None = None):
        self.header = header
        self.fds = FdNames()

    def _time(self, ts_ns: int) -> int:
        return self.header.wall_ns(ts_ns) if self.header else ts_ns

    def fd_info(self, info: FdInfo) -> Iterator[str]:
        self.fds.learn(info)
        ident = info.identity
        yield json.dumps({"type": "fd", "ts_ns": info.ts_ns, "pid": info.pid, "fd": info.fd,
                          "kind": ident.kind, "local": ident.local, "remote": ident.remote,
                          "path": ident.path}, ensure_ascii=True)

    def event(self, event: IoEvent) -> Iterator[str]:
        obj: dict[str, object] = {
            "type": "write" if event.direction == "out" else "read",
            "ts_ns": event.ts_ns, "wall_ns": self._time(event.ts_ns), "seq": event.seq,
            "pid": event.pid, "tid": event.tid, "uid": event.uid,
            "comm": event.comm.decode("utf-8", "backslashreplace"), "fd": event.fd,
            "syscall": event.syscall, "direction": event.direction,
            "count": event.count, "ret": event.ret, "captured": len(event.data),
            "truncated": event.truncated,
            "data_b64": base64.b64encode(event.data).decode("ascii"),
        }
        identity = self.fds.get(event.pid, event.fd)
        if identity is not None:
            obj["fd_desc"] = identity.describe()
        if event.layer != "syscall" or event.tls_call_ns is not None:  # record --tls (1.4)
            obj["layer"] = event.layer
            if event.tls is not None:
                obj["tls"] = {"library": event.tls.library, "object": event.tls.object,
                              "conn": event.tls.conn, "fd_source": event.tls.fd_source,
                              "call_ns": event.tls.call_ns, "raw_ret": event.tls.raw_ret}
            if event.tls_call_ns is not None:
                obj["tls_call_ns"] = event.tls_call_ns
        try:
            obj["text"] = event.data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        yield json.dumps(obj, ensure_ascii=True)

    def all_lines(self, header: Header, records: Iterable[Record]) -> Iterator[str]:
        """export --format jsonl: the header, then every record, the end record included."""
        yield from self.header_line(header)
        for record in records:
            if isinstance(record, IoEvent):
                yield from self.event(record)
            elif isinstance(record, FdInfo):
                yield from self.fd_info(record)
            elif isinstance(record, Lost):
                yield from self.lost(record)
            elif isinstance(record, End):
                yield from self.end_line(record)

    def header_line(self, header: Header) -> Iterator[str]:
        yield json.dumps({"type": "header", **header_dict(header)}, ensure_ascii=True)

    def end_line(self, end: End) -> Iterator[str]:
        yield json.dumps({"type": "end", "ts_ns": end.ts_ns, "wall_ns": self._time(end.ts_ns),
                          "events": end.events, "bytes": end.bytes, "lost": end.lost},
                         ensure_ascii=True)

    def lost(self, lost: Lost) -> Iterator[str]:
        yield json.dumps({"type": "lost", "ts_ns": lost.ts_ns, "wall_ns": self._time(lost.ts_ns),
                          "count": lost.count, "source": lost.source}, ensure_ascii=True)
