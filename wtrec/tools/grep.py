"""`wtrec grep`: find a pattern in payload bytes, per event or across a stream.

Per event, each payload is searched on its own. With `stream` the payloads
of each (pid, fd, direction) are joined in file order, so a match split
across two writes is found; only the last STREAM_WINDOW bytes of a stream
are kept, so a match longer than that can be missed. A stream is cut where
bytes are missing (a truncated capture) rather than joined across the gap.

Per-event search is fast on big captures because the reader builds only
the events whose payload matches (`payload_test`), and tests those only in
the stretches of a decompressed frame's bytes where a search of the whole
frame (`frame_finder`) finds that a match may begin, where that search is
exact; every event is still checked by the reader.
"""

import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from wtrec.records import Header, IoEvent
from wtrec.tools import byte_search
from wtrec.tools.fd_names import FdNames
from wtrec.tools.render import BOLD, RED, RESET, escape_bytes, escape_text, format_clock, hex_lines
from wtrec.tools.streams import sent_bytes

STREAM_WINDOW = 8 << 10  # how far back a match spanning writes may start
LINE_CONTEXT_MAX = 120  # bytes each side when the context is the enclosing line


@dataclass(frozen=True)
class Match:
    """A match at data[start:end]; `first`/`last` are the events it lies in."""

    data: bytes
    start: int
    end: int
    first: IoEvent
    last: IoEvent
    offset: int  # of data[start] in the event's payload, or in the stream
    stream: bool


def event_matches(event: IoEvent, pattern: re.Pattern) -> Iterator[Match]:
    """The matches in one event's payload, found as they are asked for."""
    for m in pattern.finditer(event.data):
        yield Match(event.data, m.start(), m.end(), event, event, m.start(), False)


# Zero-width assertions look at the bytes around a match. Around a payload
# inside a frame those are msgpack bytes, not the payload's edges, so a
# pattern holding one may match a payload and not the frame, or the reverse.
# A pattern without them matches some payload only if it matches the frame
# (the payload is there verbatim); "(?" also covers inline flags, and a
# '^' in a class is caught too: a needless slow path, never a missed match.
_CONTEXT_TOKENS = (b"^", b"$", b"\\A", b"\\Z", b"\\b", b"\\B", b"(?")


def frame_finder(pattern: re.Pattern) -> Callable[[bytes, int], int] | None:
    """find(frame, start): where the first match in a frame's bytes at or after start begins, or -1.

    A payload is stored verbatim in its frame, so if some payload at or
    after `start` matches, a match begins in the frame between `start` and
    that payload's match: the reader builds only the events of the stretch
    of records where one may begin. None when the pattern depends on what
    surrounds a match (anchors, lookaround, word boundaries), so only
    payload by payload is exact.
    """
    source = pattern.pattern
    literal = literal_of(pattern)
    if literal is None and (
            isinstance(source, str) or any(token in source for token in _CONTEXT_TOKENS)):
        return None
    if literal is not None and not pattern.flags & re.IGNORECASE:
        return byte_search.finder(literal)  # the substring search of grep -F
    if literal is not None:  # -i: a bytes pattern folds ASCII case only, as lower() does
        return _folded_finder(byte_search.finder(literal.lower()))
    search = pattern.search

    def find(frame: bytes, start: int) -> int:
        found = search(frame, start)
        return -1 if found is None else found.start()

    return find


def _folded_finder(find_folded: Callable[[bytes, int], int]) -> Callable[[bytes, int], int]:
    """find_folded() in the lower-cased frame (made once per frame): re's IGNORECASE is ~10x slower."""
    # the frame last asked about and its lower-cased copy, one tuple replaced
    # whole, so the reader's threads may share the finder
    lowered: list[tuple[bytes, bytes]] = [(b"", b"")]

    def find(frame: bytes, start: int) -> int:
        known = lowered[0]
        if known[0] is not frame:
            known = (frame, frame.lower())
            lowered[0] = known
        return find_folded(known[1], start)

    return find


_METACHARACTERS = frozenset(b".^$*+?{}[]|()\\")


def literal_of(pattern: re.Pattern) -> bytes | None:
    """The bytes a pattern stands for when it is a plain string (as -F makes), else None.

    With -i (re.IGNORECASE) the pattern matches those bytes in any ASCII case.
    """
    source = pattern.pattern
    if isinstance(source, str):
        return None
    out = bytearray()
    escaped = False
    for byte in source:
        if escaped:
            if chr(byte).isascii() and chr(byte).isalnum():
                return None  # \d, \1, \x41...: not a plain character
            out.append(byte)
            escaped = False
        elif byte == 0x5C:
            escaped = True
        elif byte in _METACHARACTERS:
            return None
        else:
            out.append(byte)
    return None if escaped else bytes(out)


def payload_test(pattern: re.Pattern) -> Callable[[bytes], object]:
    """Whether the pattern is found in some bytes; a substring test when it is a plain string."""
    literal = literal_of(pattern)
    if literal is None:
        return pattern.search
    if pattern.flags & re.IGNORECASE:  # a bytes pattern folds ASCII case only, as lower() does
        folded = literal.lower()
        return lambda data: folded in data.lower()
    return operator.methodcaller("__contains__", literal)  # `literal in data`, without a Python frame


class _StreamWindow:
    def __init__(self):
        self.buffer = b""
        self.base = 0  # stream offset of buffer[0]
        self.starts: list[tuple[int, IoEvent]] = []  # stream offset where each event begins
        self.reported_end = 0  # stream offset

    def event_at(self, offset: int) -> IoEvent:
        found = self.starts[0][1]
        for start, event in self.starts:
            if start > offset:
                break
            found = event
        return found


def iter_stream_matches(events: Iterable[IoEvent], pattern: re.Pattern) -> Iterator[Match]:
    """Matches over the joined payloads of each (pid, fd, direction)."""
    windows: dict[tuple[int, int, str], _StreamWindow] = {}
    for event in events:
        key = (event.pid, event.fd, event.direction)
        window = windows.get(key)
        if window is None:
            window = windows[key] = _StreamWindow()
        data = sent_bytes(event)
        if not data:
            continue
        old_end = window.base + len(window.buffer)
        window.starts.append((old_end, event))
        window.buffer += data
        for m in pattern.finditer(window.buffer):
            start, end = window.base + m.start(), window.base + m.end()
            if end <= old_end or start < window.reported_end:
                continue
            window.reported_end = end
            yield Match(window.buffer, m.start(), m.end(), window.event_at(start),
                        window.event_at(max(start, end - 1)), start, True)
        if event.truncated:  # bytes are missing: do not join across the gap
            windows[key] = _StreamWindow()
            continue
        if len(window.buffer) > STREAM_WINDOW:
            drop = len(window.buffer) - STREAM_WINDOW
            window.buffer = window.buffer[drop:]
            window.base += drop
            while len(window.starts) > 1 and window.starts[1][0] <= window.base:
                window.starts.pop(0)


class MatchPrinter:
    """Turns matches into escaped lines; colour marks the match on a terminal."""

    def __init__(self, header: Header | None, names: FdNames,
                 prefix: str, context: int | None, hex_view: bool, color: bool):
        self.header = header
        self.names = names
        self.prefix = prefix
        self.context = context
        self.hex_view = hex_view
        self.color = color

    def title(self, first: IoEvent, last: IoEvent, where: str) -> str:
        seq = "" if first.seq is None else f"#{first.seq}"
        if last is not first and last.seq is not None:
            seq += f"..#{last.seq}"
        ident = self.names.get(first.pid, first.fd)
        what = f" ({escape_text(ident.describe())})" if ident else ""
        return (f"{self.prefix}{seq} {format_clock(self.header, first.ts_ns)} "
                f"{escape_bytes(first.comm)} pid {first.pid} fd {first.fd}{what} "
                f"{escape_text(first.syscall)} {where}")

    def _window(self, match: Match) -> tuple[int, int]:
        data = match.data
        if self.context is not None:
            return max(0, match.start - self.context), min(len(data), match.end + self.context)
        line_start = data.rfind(b"\n", 0, match.start) + 1
        line_end = data.find(b"\n", match.end)
        line_end = len(data) if line_end < 0 else line_end
        return (max(line_start, match.start - LINE_CONTEXT_MAX),
                min(line_end, match.end + LINE_CONTEXT_MAX))

    def match_lines(self, match: Match) -> Iterator[str]:
        where = f"@{'stream ' if match.stream else ''}{match.offset}"
        lo, hi = self._window(match)
        data = match.data
        if self.hex_view:
            yield self.title(match.first, match.last, f"{where}, {match.end - match.start} bytes:")
            for line in hex_lines(data[lo:hi]):
                yield "  " + line
            return
        before, hit, after = data[lo:match.start], data[match.start:match.end], data[match.end:hi]
        shown = escape_bytes(hit)
        if self.color:
            shown = f"{BOLD}{RED}{shown}{RESET}"
        dots_l = "..." if lo > 0 else ""
        dots_r = "..." if hi < len(data) else ""
        yield (f"{self.title(match.first, match.last, where)}: "
               f"{dots_l}\"{escape_bytes(before)}{shown}{escape_bytes(after)}\"{dots_r}")

    def event_line(self, event: IoEvent) -> str:
        """For -v: the event and the start of its payload."""
        preview = event.data[:LINE_CONTEXT_MAX]
        more = "..." if len(event.data) > len(preview) else ""
        return (f"{self.title(event, event, f'{len(event.data)} bytes')}: "
                f"\"{escape_bytes(preview)}\"{more}")
