"""The typed records a capture holds, as plain dataclasses.

These are what the reader yields and the writer takes; docs/FORMAT.md gives
their byte-level encoding. Times are integer nanoseconds on the boot clock
(CLOCK_BOOTTIME) unless a name says otherwise; payloads stay bytes.
"""

from dataclasses import dataclass, field

FORMAT_MAJOR = 1
FORMAT_MINOR = 4

# Record type codes: the first element of every msgpack record array.
TYPE_HEADER = 1
TYPE_WRITE = 2
TYPE_LOST = 3
TYPE_END = 4
TYPE_READ = 5  # since 1.1: same layout as TYPE_WRITE, data received
TYPE_FD = 6  # since 1.1: what a file descriptor is


@dataclass(frozen=True)
class Filters:
    """What the recorder was told to trace; an event matched any of them."""

    comms: tuple[str, ...] = ()
    pids: tuple[int, ...] = ()
    all: bool = False
    syscalls: tuple[str, ...] = ("write",)  # since 1.1
    follow: bool = False  # since 1.1: children of traced processes too
    command: tuple[str, ...] = ()  # since 1.1: the command wtrec started
    tls: bool = False  # since 1.4: TLS library calls were traced too (record --tls)
    # since 1.4: where TLS probes were placed: (file, library family, entry points)
    tls_targets: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Derivation:
    """One step that made this file from others (filter, redact, merge, recover).

    `inputs` are the headers of the files it was made from, so a derived
    capture still says where, when and how its data was recorded; `notes`
    say how (the options, the redaction pattern names), never what was removed.
    """

    op: str
    tool_version: str
    time_ns: int  # wall clock when the step ran
    argv: tuple[str, ...]
    notes: tuple[tuple[str, str], ...] = ()
    inputs: tuple["Header", ...] = ()


@dataclass(frozen=True)
class SeriesPart:
    """Which file of a rotated recording (record -C/-G) a capture is; since 1.3."""

    id: str  # shared by every file of one recording: 16 random hex digits
    index: int  # 0 for the recording's first file, then 1, 2, ...


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
    provenance: tuple[Derivation, ...] = ()  # since 1.2: oldest step first
    series: SeriesPart | None = None  # since 1.3: set when the recording rotates files

    def wall_ns(self, boot_ns: int) -> int:
        """Converts an event's boot-clock time to wall-clock nanoseconds."""
        return self.anchor_real_ns + (boot_ns - self.anchor_boot_ns)


class PayloadSizes:
    """What a call's sizes say about its payload; shared by every event type.

    For classes with `count` (asked for), `ret` (the return value, None
    before format 1.1), `data` (what was captured) and `direction`.
    """

    __slots__ = ()
    count: int
    ret: int | None
    data: bytes
    direction: str
    layer: str

    @property
    def expected(self) -> int:
        """Bytes a whole capture would hold: asked-for (out) or received (in).

        A TLS call's data is what the library accepted or produced, either way.
        """
        if self.direction == "in" or self.layer == "tls":
            return max(self.ret or 0, 0)
        return self.count

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.expected

    @property
    def failed(self) -> bool:
        return self.ret is not None and self.ret < 0


@dataclass(frozen=True)
class TlsInfo:
    """What a TLS-layer event adds (since 1.4): which library, connection and call.

    `library` is the family (openssl, gnutls, wolfssl), `object` the file
    the probe was in when only one such file was probed (else None), `conn`
    the library's connection handle (an opaque number, per process),
    `fd_source` how the event's fd was found (in-call, thread, connection,
    unknown: see capture/tls_connections.py), `call_ns` when the call was
    entered (the event's ts_ns is its return), `raw_ret` what the library
    returned (the event's ret is the plaintext length, or this when <= 0).
    """

    library: str
    object: str | None
    conn: int
    fd_source: str
    call_ns: int
    raw_ret: int


@dataclass(frozen=True)
class IoEvent(PayloadSizes):
    """One traced syscall: what the process asked for, what it did, what we copied.

    `count` is the length the process passed; `data` holds at most snaplen
    bytes of it (for reads: of what arrived), so `len(data) < count` can
    mean the capture was cut short. `ret` is the syscall's return value
    (bytes written or read, or -errno); None in captures made before 1.1.
    """

    ts_ns: int
    pid: int
    tid: int
    uid: int
    comm: bytes
    fd: int
    count: int
    data: bytes = field(repr=False)
    syscall: str = "write"
    ret: int | None = None
    seq: int | None = None
    direction: str = "out"  # "out": the write family; "in": the read family
    # Since 1.4 (record --tls): "tls" for a TLS library call, whose `syscall`
    # is the entry point (SSL_write...) and `data` the plaintext; a syscall
    # event made inside such a call (its ciphertext) has that call's
    # call_ns in `tls_call_ns`.
    layer: str = "syscall"
    tls: TlsInfo | None = None
    tls_call_ns: int | None = None


# An event as a plain tuple, in the order the format stores its fields
# (docs/FORMAT.md, write and read records) without the trailing sequence
# number: the recorder carries events this way from the kernel's bytes to
# msgpack, a C-built tuple per event instead of a dataclass. The recorder's
# rows carry a twelfth field, ROW_SEQ: the decoder's arrival number, which
# is the event's seq in the file unless time order moved it.
EventRow = tuple
ROW_TYPE, ROW_TS, ROW_PID, ROW_TID, ROW_UID, ROW_COMM, ROW_FD = 0, 1, 2, 3, 4, 5, 6
ROW_COUNT, ROW_DATA, ROW_SYSCALL, ROW_RET, ROW_SEQ = 7, 8, 9, 10, 11


def event_row(event: "IoEvent") -> EventRow:
    """The row of an event (its seq left out)."""
    return (TYPE_READ if event.direction == "in" else TYPE_WRITE, event.ts_ns, event.pid,
            event.tid, event.uid, event.comm, event.fd, event.count, event.data, event.syscall,
            event.ret)


def event_from_row(row: EventRow, seq: int | None = None) -> "IoEvent":
    """The event a row stands for."""
    kind, ts_ns, pid, tid, uid, comm, fd, count, data, syscall, ret = row
    return IoEvent(ts_ns, pid, tid, uid, comm, fd, count, data, syscall, ret, seq,
                   "in" if kind == TYPE_READ else "out")


@dataclass(frozen=True)
class FdIdentity:
    """What a file descriptor refers to.

    kind is one of tcp, udp, unix, socket, file, pipe, tty, other, unknown;
    local and remote are "address:port" ("[v6]:port" for IPv6) when known.
    """

    kind: str
    local: str | None = None
    remote: str | None = None
    path: str | None = None

    def describe(self) -> str:
        if self.kind in ("tcp", "udp") or (self.local or self.remote):
            text = self.kind
            if self.local or self.remote:
                text += f" {self.local or '?'} -> {self.remote or '?'}"
            if self.path:
                text += f" {self.path}"
            return text
        return f"{self.kind} {self.path}" if self.path else self.kind


@dataclass(frozen=True)
class FdInfo:
    """Says what (pid, fd) is from `ts_ns` on; a later one for the same pair replaces it."""

    ts_ns: int
    pid: int
    fd: int
    identity: FdIdentity


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


LAYERS = ("syscall", "tls")

Record = Header | IoEvent | FdInfo | Lost | End
