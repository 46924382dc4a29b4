"""The recorder's TLS half (`record --tls`): where to probe, and TLS calls into events.

`find_targets` decides which files get uprobes for a session (what the
traced processes map, the command's own executable, the system's TLS
libraries, the --tls-lib paths); `prepare` and `attach` are what the
recording session calls around loading the probe. `TlsEvents` is handed the decoded kernel
records: in kernel order it ties the syscall events flagged as made inside
a TLS call to that call (they are its ciphertext), and in file order it
turns each TLS call into an IoEvent of layer "tls" whose fd is the socket
underneath (capture/tls_connections.py). Plain Python, tested without root.
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from wtrec.capture.kernel_records import READ_FAMILY, TLS_CALL_OPEN, FdNote, TlsKernelEvent
from wtrec.capture.launch import HeldCommand
from wtrec.capture.probe import Probe, ProbeConfig
from wtrec.capture.tls_connections import SOCKET_KINDS, CallFd, TlsCall, TlsConnections
from wtrec.capture.tls_libraries import (
    ENTRY_POINTS,
    FAMILY_NAMES,
    AttachTarget,
    TlsSearch,
    combine,
    linked_libraries,
    programs_named,
    search_executable,
    search_paths,
    search_process,
    search_system,
)
from wtrec.records import FdIdentity, IoEvent, TlsInfo

# Flagged syscall events waiting for their call's return, by thread; a
# thread whose call never comes back (its record lost) must not grow this.
MAX_WAITING_THREADS = 4096
_new = object.__new__


def find_targets(*, pids: Sequence[int], system: bool, command_binary: str | None,
                 tls_libs: Sequence[str], reads: bool,
                 command_libraries: Sequence[str] = (),
                 programs: Sequence[str] = ()) -> TlsSearch:
    """Where the session's TLS entry points are.

    `-p PID`: what each process maps (so a library outside the system's, or
    one linked in, is found). `-c`, `--all` and a command (`system`): the
    system's TLS libraries, whose uprobes are armed in any process that maps
    them later (a command's libraries are loaded after it starts), plus the
    command's executable (node carries OpenSSL inside) and the libraries
    its loader will load (`command_libraries`: a libwolfssl in a build
    tree found through RPATH or LD_LIBRARY_PATH). `programs`: the
    executables `-c COMM` names (programs_named). --tls-lib paths always.
    The read entry points only with `reads` (--read, or a read syscall
    chosen), as for syscalls. Raises UsageError for a bad --tls-lib
    path or a gone pid.
    """
    searches = [search_process(pid) for pid in pids]
    if command_binary is not None:
        searches.append(search_executable(command_binary, command_libraries))
    searches += [search_executable(program) for program in programs]
    searches.append(search_system(tls_libs) if system else search_paths(tls_libs))
    where = " and ".join([f"pid {pid}" for pid in pids]
                         + ([command_binary] if command_binary else [])
                         + (["the system's libraries"] if system else []))
    search = combine(where or "--tls-lib", searches)
    if not reads:
        search.targets = [target for target in search.targets if target.entry.direction == "out"]
    return search


def prepare(config: ProbeConfig, *, command: HeldCommand | None,
            notify: Callable[[str], None]) -> tuple[list[AttachTarget] | None, ProbeConfig]:
    """Finds what to probe for a session and says which on stderr (`notify`).

    With none found the session records syscalls only: the config comes
    back without tls, so the TLS programs (and their syscall hooks) are not
    even compiled in.
    """
    command_binary = command.binary if command else None
    libraries = linked_libraries(command_binary, env=command.env, user=command.user,
                                 group=command.group) if command and command_binary else []
    search = find_targets(pids=config.pids,
                          system=bool(config.comms or config.trace_all or command_binary),
                          command_binary=command_binary, tls_libs=config.tls_libs,
                          reads=any(name in READ_FAMILY for name in config.syscalls),
                          command_libraries=libraries,
                          programs=programs_named(config.comms))
    for line in search.describe():
        notify(line)
    if not search.targets:
        return None, replace(config, tls=False)
    return search.targets, config


def attach(probe: Probe, targets: Sequence[AttachTarget], config: ProbeConfig, *,
           command: bool, notify: Callable[[str], None]) -> None:
    """Places the probes; says on stderr what could not be probed."""
    # -p alone: only those processes need the probes, bound there so that other
    # processes using the library pay no trap.
    bound = () if (command or config.follow or config.comms or config.trace_all) else config.pids
    for failure in probe.attach_tls(targets, bound):
        notify(f"--tls: cannot probe {failure}")


def tls_targets_for_header(targets: Iterable[AttachTarget]
                           ) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(file, family, entry points) per probed file, as the capture header keeps them."""
    by_path: dict[str, tuple[str, list[str]]] = {}
    for target in targets:
        by_path.setdefault(target.path, (target.family, []))[1].append(target.symbol)
    return tuple((path, family, tuple(symbols)) for path, (family, symbols) in by_path.items())


def no_call_note(targets: Sequence[AttachTarget]) -> str:
    """What the recorder says at the end when no TLS call was recorded at all."""
    families = sorted({FAMILY_NAMES[target.family] for target in targets})
    return (f"--tls: no TLS library call was recorded (probed {', '.join(families)} in "
            f"{len({target.path for target in targets})} files); the capture holds syscalls only")


class TlsEvents:
    """Turns TLS kernel events into IoEvents and marks the ciphertext syscalls.

    `link` sees every batch of decoded records in kernel order (a thread's
    syscalls inside a call always precede the call's own record there);
    `event` and `note` are called in file order, as the recorder writes.
    """

    def __init__(self, targets: Sequence[AttachTarget],
                 identity: Callable[[int, int], FdIdentity]):
        self._identity = identity
        self._connections = TlsConnections(identity)
        self._waiting: dict[int, list[IoEvent]] = {}
        paths: dict[str, set[str]] = {}
        for target in targets:
            paths.setdefault(target.symbol, set()).add(target.path)
        # The BPF side knows the entry point, not which file it was in: name
        # the file when only one was probed for that entry point.
        self._object = {symbol: next(iter(found)) if len(found) == 1 else None
                        for symbol, found in paths.items()}
        self.calls = 0

    def link(self, items: Iterable[object]) -> None:
        """Ties each flagged syscall event to the TLS call it was made in (kernel order)."""
        waiting = self._waiting
        for item in items:
            if isinstance(item, IoEvent):
                if item.tls_call_ns == TLS_CALL_OPEN:
                    item.__dict__["tls_call_ns"] = None  # unless its call claims it
                    if len(waiting) >= MAX_WAITING_THREADS and item.tid not in waiting:
                        waiting.clear()
                    waiting.setdefault(item.tid, []).append(item)
            elif isinstance(item, TlsKernelEvent):
                self._claim(item)

    def _claim(self, call: TlsKernelEvent) -> None:
        events = self._waiting.pop(call.tid, None)
        if not events:
            return
        for event in events:
            # Made inside the call: its ciphertext when on the socket (the fd
            # table, which says what is one, is behind: it follows file order).
            if event.pid == call.pid and event.ts_ns >= call.call_ns:
                event.__dict__["tls_call_ns"] = call.call_ns

    def event(self, call: TlsKernelEvent) -> IoEvent:
        """The TLS call as an event of layer "tls", its fd resolved (file order)."""
        self.calls += 1
        if 1 <= call.entry <= len(ENTRY_POINTS):
            entry = ENTRY_POINTS[call.entry - 1]
            symbol, family, direction = entry.symbol, entry.family, entry.direction
        else:  # a BPF program newer than this table: keep the event, say what is known
            symbol, family, direction = f"tls-entry-{call.entry}", "unknown", "out"
        fd, source = self._fd_of(call, direction)
        # As kernel_records does for syscall events: the frozen dataclasses'
        # generated __init__ (an object.__setattr__ per field) was most of
        # the ~13 us a TLS event cost here; filling __dict__ makes the same
        # objects (the tests compare them with ones built by __init__).
        info = _new(TlsInfo)
        info.__dict__.update(library=family, object=self._object.get(symbol), conn=call.conn,
                             fd_source=source, call_ns=call.call_ns, raw_ret=call.ret)
        event = _new(IoEvent)
        event.__dict__.update(
            ts_ns=call.ts_ns, pid=call.pid, tid=call.tid, uid=call.uid, comm=call.comm, fd=fd,
            count=call.requested, data=call.data, syscall=symbol,
            ret=call.length if call.ret > 0 else call.ret, seq=None, direction=direction,
            layer="tls", tls=info, tls_call_ns=None)
        return event

    def _fd_of(self, call: TlsKernelEvent, direction: str) -> tuple[int, str]:
        in_call = call.in_call
        # The common case (a library doing its own socket I/O, one fd): the
        # rules of tls_connections.py give that fd when it is a socket.
        if len(in_call) == 1 and self._identity(call.pid, in_call[0][0]).kind in SOCKET_KINDS:
            fd = in_call[0][0]
            self._connections.remember(call.pid, call.conn, fd)
            return fd, "in-call"
        return self._connections.resolve(TlsCall(
            pid=call.pid, conn=call.conn, direction=direction,
            in_call=tuple(CallFd(fd, received, sent) for fd, received, sent in in_call),
            before_read_fd=call.before_read_fd, before_write_fd=call.before_write_fd))

    def note(self, note: FdNote) -> None:
        """Forgets connections whose fd closed or whose process exited (file order)."""
        if note.op == "close":
            self._connections.forget_fd(note.pid, note.fd)
        elif note.op == "exit":
            self._connections.forget_process(note.pid)
