"""Streams: the bytes one process sent (or received) on one file descriptor, in order.

replay and `export --format raw` act on exactly one stream; when the
user's selection leaves several, they are listed rather than guessed.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from wtrec.errors import UsageError
from wtrec.format import Counts
from wtrec.records import FdIdentity, IoEvent, Record
from wtrec.tools.fd_names import FdNames
from wtrec.tools.render import escape_bytes, escape_text
from wtrec.tools.selection import Selection


@dataclass
class StreamSummary:
    pid: int
    fd: int
    comm: bytes
    identity: FdIdentity | None
    out: Counts = field(default_factory=Counts)
    into: Counts = field(default_factory=Counts)

    def describe(self) -> str:
        what = escape_text(self.identity.describe()) if self.identity else "unknown"
        return (f"--pid {self.pid} --fd {self.fd}  {escape_bytes(self.comm)}  {what}  "
                f"out {self.out.events} events {self.out.captured} bytes, "
                f"in {self.into.events} events {self.into.captured} bytes")


class AmbiguousStreamError(UsageError):
    """The selection leaves more than one stream (or none)."""


def list_streams(records: Iterable[Record], selection: Selection) -> list[StreamSummary]:
    """Every (pid, fd) with selected events, in order of first appearance."""
    names = FdNames()
    streams: dict[tuple[int, int], StreamSummary] = {}
    for event in names.events(records):
        if not selection.matches(event):
            continue
        key = (event.pid, event.fd)
        summary = streams.get(key)
        if summary is None:
            summary = streams[key] = StreamSummary(event.pid, event.fd, event.comm,
                                                   names.get(event.pid, event.fd))
        (summary.into if event.direction == "in" else summary.out).add(event)
    return list(streams.values())


def choose_stream(streams: list[StreamSummary], direction: str) -> StreamSummary:
    """The one stream with events in `direction`, or an error listing the candidates."""
    candidates = [s for s in streams if (s.into if direction == "in" else s.out).events]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise AmbiguousStreamError(f"no stream with {direction} events matches the selection")
    listing = "\n".join("  " + s.describe() for s in candidates)
    raise AmbiguousStreamError(f"{len(candidates)} streams match; choose one with --pid and "
                               f"--fd:\n{listing}")


def one_stream(read_pass: Callable[[], Iterable[Record]], selection: Selection,
               direction: str) -> tuple[StreamSummary, Iterable[Record]]:
    """The one stream the selection leaves, and the capture's records read again.

    Two passes of `read_pass` (each a fresh reading of the records after
    the header): the first lists the streams, the second is handed back.
    """
    chosen = choose_stream(list_streams(read_pass(), selection), direction)
    return chosen, read_pass()


def sent_bytes(event: IoEvent) -> bytes:
    """What the peer got: nothing for a failed write, the written prefix for a short one."""
    if event.ret is None:
        return event.data
    if event.ret < 0:
        return b""
    return event.data[:event.ret]


def stream_events(records: Iterable[Record], stream: StreamSummary, direction: str,
                  selection: Selection | None = None) -> Iterator[IoEvent]:
    """The events of one stream and direction, in file order (those `selection` keeps).

    Pass the selection that chose the stream when it picks a layer: a TLS
    connection's socket carries both the plaintext calls and the ciphertext.
    """
    for record in records:
        if (isinstance(record, IoEvent) and record.pid == stream.pid
                and record.fd == stream.fd and record.direction == direction
                and (selection is None or selection.matches(record))):
            yield record
