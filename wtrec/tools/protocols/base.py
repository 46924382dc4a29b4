"""What every protocol decoder hands out, and the limits they all keep.

A decoder sees one conversation as two flows of bytes (flow 0 and flow 1,
the two directions) and turns them into Messages and Notes. It never
raises on what it is fed: malformed bytes become a Note and a
resynchronisation, a message cut short (snaplen, loss, end of capture)
comes out with `incomplete` set. No decoder holds more than MAX_HELD bytes
of one flow while it waits for a message to end; bodies it only counts.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

MAX_HELD = 64 * 1024  # bytes of one flow a decoder may keep while a message is open
FLOWS = (0, 1)


@dataclass
class Message:
    """One protocol message: its JSON fields and its one-line human summary."""

    flow: int
    ts_ns: int  # time of the event that held its first byte
    fields: dict = field(default_factory=dict)
    summary: str = ""
    incomplete: bool = False


@dataclass
class Note:
    """Something a decoder wants the user to know about one flow (malformed, skipped)."""

    flow: int
    ts_ns: int
    text: str


Output = Message | Note


class ConversationDecoder(Protocol):
    """Decodes both flows of one conversation; state (HPACK, pending requests) is shared."""

    proto: str

    def feed(self, flow: int, data: bytes, ts_ns: int) -> Iterator[Output]:
        """Bytes of `flow` as one event carried them."""
        ...

    def gap(self, flow: int, size: int | None, ts_ns: int) -> Iterator[Output]:
        """`size` bytes of `flow` are missing here (None: maybe some, a Lost record)."""
        ...

    def finish(self, ts_ns: int) -> Iterator[Output]:
        """The capture ends: what is still open comes out incomplete."""
        ...


def text(data: bytes | bytearray | memoryview) -> str:
    """Protocol bytes as str, losslessly: UTF-8, each undecodable byte as a lone surrogate.

    This is Python's "surrogateescape": byte 0xNN that is not part of valid
    UTF-8 becomes U+DCNN (JSON `\\udcNN`), and `value.encode("utf-8",
    "surrogateescape")` gives the exact bytes back. Valid UTF-8 never decodes
    to a lone surrogate, so nothing is ambiguous. The human view escapes it
    as \\xNN (conversation_views.safe_text).
    """
    return bytes(data).decode("utf-8", "surrogateescape")


def quoted(value: str) -> str:
    """A decoded value inside double quotes for a note or summary (escaped later, when shown)."""
    return f'"{value}"'


def size_text(size: int) -> str:
    return f"{size} B"


def duration_text(ns: int) -> str:
    if ns < 1_000_000:
        return f"{ns / 1000:.1f} us"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.1f} ms"
    return f"{ns / 1_000_000_000:.2f} s"
