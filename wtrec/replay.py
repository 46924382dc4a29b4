"""Replaying a capture: its timing, and the sinks the bytes go to.

Timing is a chain of small generators over (delay_ns, event) pairs, as in
a terminal-session player: relative delays, then a cap on idle gaps, then
a speed factor. A sink is only ever a destination the user named on the
command line; nothing in the capture chooses where bytes go.
"""

import math
import select
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO, Protocol

from wtrec.errors import OutputError, UsageError
from wtrec.records import IoEvent

Timed = tuple[int, IoEvent]  # (nanoseconds to wait before it, the event)


def to_relative_time(events: Iterable[IoEvent]) -> Iterator[Timed]:
    previous = None
    for event in events:
        delay = 0 if previous is None else max(0, event.ts_ns - previous)
        previous = event.ts_ns
        yield delay, event


def cap_relative_time(items: Iterable[Timed], max_gap_ns: int | None) -> Iterator[Timed]:
    for delay, event in items:
        yield (delay if max_gap_ns is None else min(delay, max_gap_ns)), event


def adjust_speed(items: Iterable[Timed], speed: float) -> Iterator[Timed]:
    for delay, event in items:
        yield round(delay / speed), event


def timed(events: Iterable[IoEvent], speed: float = 1.0,
          max_gap_s: float | None = None) -> Iterator[Timed]:
    if not (math.isfinite(speed) and speed > 0):
        raise UsageError(f"--speed takes a positive number, not {speed}")
    if max_gap_s is not None and not (max_gap_s >= 0):
        raise UsageError(f"--max-gap takes a number of seconds, not {max_gap_s}")
    if max_gap_s is not None and math.isinf(max_gap_s):
        max_gap_s = None  # no cap
    items = to_relative_time(events)
    items = cap_relative_time(items, None if max_gap_s is None else round(max_gap_s * 1e9))
    return adjust_speed(items, speed)


MAX_SLEEP_NS = 3600 * 10**9  # one sleep call; longer waits are made of several


def paced(items: Iterable[Timed], sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], int] = time.monotonic_ns) -> Iterator[IoEvent]:
    """Yields each event when its time comes; delays add up against a clock, not drift.

    A gap of any length (a capture may claim centuries) is slept in pieces
    the OS accepts; --max-gap is how a user shortens it.
    """
    due = clock()
    for delay, event in items:
        due += delay
        while (wait := due - clock()) > 0:
            sleep(min(wait, MAX_SLEEP_NS) / 1e9)
        yield event


class Sink(Protocol):
    """Where replayed bytes go; `responses` yields what comes back, if anything can."""

    def send(self, data: bytes) -> None: ...

    def responses(self, wait_s: float) -> Iterator[bytes]: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


class SocketSink:
    """A stream socket to the peer the user named: tcp://HOST:PORT or unix:PATH."""

    def __init__(self, target: str, timeout: float = 10.0):
        self.target = target
        try:
            if target.startswith("tcp://"):
                host, port = _host_port(target[len("tcp://"):])
                self.sock = socket.create_connection((host, port), timeout=timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(target[len("unix:"):])
        except OSError as exc:
            raise OutputError(f"cannot connect to {target}: {exc.strerror or exc}") from None

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise OutputError(f"sending to {self.target} failed: {exc.strerror or exc}") from None

    def responses(self, wait_s: float) -> Iterator[bytes]:
        """What the peer has sent back, waiting up to `wait_s` for the next piece."""
        while True:
            ready, _, _ = select.select([self.sock], [], [], wait_s)
            if not ready:
                return
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            yield data

    def finish(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


class StreamSink:
    """A file or stdout: the bytes, nothing back."""

    def __init__(self, out: BinaryIO):
        self.out = out

    def send(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def responses(self, wait_s: float) -> Iterator[bytes]:
        return iter(())

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--to tcp://HOST:PORT, not tcp://{text}")
    return host, int(port)


def check_target(target: str) -> None:
    """Refuses anything but the four target forms, before any input is read."""
    if target == "-" or target.startswith("file:") and len(target) > 5:
        return
    if target.startswith("tcp://"):
        _host_port(target[len("tcp://"):])
        return
    if target.startswith("unix:") and len(target) > 5:
        return
    raise UsageError(f"--to takes tcp://HOST:PORT, unix:PATH, file:PATH or -, not {target!r}")
