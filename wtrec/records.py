"""The typed records a capture holds, as plain dataclasses.

These are what the reader yields and the writer takes; docs/FORMAT.md gives
their byte-level encoding. Times are integer nanoseconds on the boot clock
(CLOCK_BOOTTIME) unless a name says otherwise; payloads stay bytes.
"""

from dataclasses import dataclass, field

FORMAT_MAJOR = 1
FORMAT_MINOR = 0

# Record type codes: the first element of every msgpack record array.
TYPE_HEADER = 1
TYPE_WRITE = 2
TYPE_LOST = 3
TYPE_END = 4


@dataclass(frozen=True)
class Filters:
    """What the recorder was told to trace; an event matched any of them."""

    comms: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    all: bool = False


@dataclass(frozen=True)
class Header:
    """Always the first record: where, when and how the capture was made."""

    format_major: int
    format_minor: int
    tool_version: str
    host: str
    kernel: str
    start_ns: int  # wall clock (CLOCK_REALTIME) when recording started
    anchor_boot_ns: int  # CLOCK_BOOTTIME at the anchor instant...
    anchor_real_ns: int  # ...and CLOCK_REALTIME at the same instant
    argv: tuple[str, ...]
    filters: Filters
    snaplen: int
    buffer: str  # "ringbuf" or "perf"

    def wall_ns(self, boot_ns: int) -> int:
        """Converts an event's boot-clock time to wall-clock nanoseconds."""
        return self.anchor_real_ns + (boot_ns - self.anchor_boot_ns)


@dataclass(frozen=True)
class WriteEvent:
    """One write(2) call: what the process asked to write and what we copied.

    `count` is the length the process passed; `data` holds at most snaplen
    bytes of it, so `len(data) < count` means the capture was cut short.
    """

    ts_ns: int
    pid: int
    tid: int
    uid: int
    comm: bytes
    fd: int
    count: int
    data: bytes = field(repr=False)

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.count


@dataclass(frozen=True)
class Lost:
    """Events the kernel could not hand to the recorder (buffer full)."""

    ts_ns: int
    count: int
    source: str  # "ringbuf" or "perf"


@dataclass(frozen=True)
class End:
    """Written on a clean close; its absence means the recorder died."""

    ts_ns: int
    events: int
    bytes: int
    lost: int


Record = Header | WriteEvent | Lost | End
