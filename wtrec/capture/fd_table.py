"""Keeps what each (pid, fd) is, from the kernel's fd notes and from /proc.

The kernel side notes socket, connect, bind, accept, open, pipe, dup and
close as they happen, so a descriptor opened during the capture is named
even if its process is gone by the time the recorder looks, and a number
reused after close gets its new identity.
"""

from collections.abc import Callable

from wtrec.capture import proc_fds
from wtrec.capture.kernel_records import FdNote
from wtrec.capture.sockaddr import AF_UNIX, format_inet, parse_sockaddr, socket_kind
from wtrec.records import FdIdentity

UNKNOWN = FdIdentity("unknown")
# A descriptor of a process whose fd notes were partly lost: it may have
# been opened, closed or replaced unseen, so neither the table nor /proc
# (which tells the present, not the event's time) can be trusted for it.
LOST = FdIdentity("unknown", path="(fd notes lost)")


class FdTable:
    """Current identity per (pid, fd), updated in event order.

    Kept per process, so a process's exit (the kernel's "exit" note) frees
    all it held: a long recording of many short-lived processes stays small,
    and a reused pid does not inherit a dead process's descriptors.
    """

    def __init__(self, resolver: Callable[[int, int], FdIdentity | None] = proc_fds.resolve):
        self._resolve = resolver
        self._known: dict[int, dict[int, FdIdentity]] = {}
        self._from_proc: dict[int, dict[int, FdIdentity | None]] = {}
        self._stale: set[int] = set()  # pids with lost notes: unnamed fds are LOST

    def __len__(self) -> int:
        """Descriptors held, all processes."""
        return (sum(map(len, self._known.values()))
                + sum(map(len, self._from_proc.values())))

    def prefetch(self, pid: int, fd: int) -> None:
        """Asks /proc now, while the process still lives, unless we know already."""
        known = self._known.get(pid)
        if known is not None and fd in known or pid in self._stale:
            return
        asked = self._from_proc.setdefault(pid, {})
        if fd not in asked:
            asked[fd] = self._resolve(pid, fd)

    def identity(self, pid: int, fd: int) -> FdIdentity:
        known = self._known.get(pid)
        if known is not None and fd in known:
            return known[fd]
        if pid in self._stale:
            return LOST
        asked = self._from_proc.setdefault(pid, {})
        if fd not in asked:
            asked[fd] = self._resolve(pid, fd)
        return asked[fd] or UNKNOWN

    def _current(self, pid: int, fd: int) -> FdIdentity | None:
        """What the table holds for the descriptor, asking /proc once if nothing.

        The answer from /proc is kept like identity()'s: a server's listening
        socket, older than the capture, is asked about at every accept, and
        each ask reads /proc (about 0.8 ms: a fifth of the recorder's time
        per event under redis-benchmark before it was kept).
        """
        if pid in self._stale:
            return self._known.get(pid, {}).get(fd)
        known = self._known.get(pid, {}).get(fd)
        if known is not None:
            return known
        asked = self._from_proc.setdefault(pid, {})
        if fd not in asked:
            asked[fd] = self._resolve(pid, fd)
        return asked[fd]

    def _set(self, pid: int, fd: int, identity: FdIdentity) -> None:
        self._known.setdefault(pid, {})[fd] = identity
        self._from_proc.get(pid, {}).pop(fd, None)

    def _forget(self, pid: int, fd: int) -> None:
        for table in (self._known, self._from_proc):
            fds = table.get(pid)
            if fds is not None:
                fds.pop(fd, None)
                if not fds:
                    del table[pid]

    def apply(self, note: FdNote) -> None:
        """Updates the table with one kernel note."""
        pid, op = note.pid, note.op
        if op == "close":
            self._forget(pid, note.fd)
        elif op == "exit":
            self._known.pop(pid, None)
            self._from_proc.pop(pid, None)
            self._stale.discard(pid)
        elif op == "inherit":
            # The child starts with copies of its parent's descriptors.
            child = note.fd2
            self._known.pop(child, None)
            self._from_proc.pop(child, None)
            if pid in self._known:
                self._known[child] = dict(self._known[pid])
            if pid in self._stale:
                self._stale.add(child)
        elif op == "fds-lost":
            # Some note of this process never came: forget all it had.
            self._known.pop(pid, None)
            self._from_proc.pop(pid, None)
            self._stale.add(pid)
        elif op == "socket":
            self._set(pid, note.fd, FdIdentity(socket_kind(note.a0, note.a1)))
        elif op in ("connect", "bind"):
            self._address(note)
        elif op == "tcp_connect":
            local = format_inet(note.a0, note.blob[:16], note.a1)
            remote = format_inet(note.a0, note.blob[16:32], note.a2)
            self._set(pid, note.fd, FdIdentity("tcp", local=local, remote=remote))
        elif op in ("accept", "accept4"):
            listener = self._current(pid, note.fd2) or FdIdentity("socket")
            _family, peer = parse_sockaddr(note.blob)
            if listener.kind == "unix":
                self._set(pid, note.fd, FdIdentity("unix", path=listener.path))
            else:
                self._set(pid, note.fd, FdIdentity(listener.kind, local=listener.local,
                                                   remote=peer))
        elif op in ("open", "openat"):
            path = note.blob.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
            self._set(pid, note.fd, FdIdentity("tty" if proc_fds.is_tty_path(path) else "file",
                                               path=path))
        elif op in ("pipe", "pipe2"):
            self._set(pid, note.fd, FdIdentity("pipe"))
            self._set(pid, note.fd2, FdIdentity("pipe"))
        elif op == "socketpair":
            kind = "unix" if note.a0 == AF_UNIX else "socket"
            self._set(pid, note.fd, FdIdentity(kind))
            self._set(pid, note.fd2, FdIdentity(kind))
        elif op in ("dup", "dup2", "dup3"):
            self._set(pid, note.fd, self._current(pid, note.fd2) or UNKNOWN)

    def _address(self, note: FdNote) -> None:
        family, text = parse_sockaddr(note.blob)
        old = self._current(note.pid, note.fd) or FdIdentity("socket")
        kind = old.kind if old.kind in ("tcp", "udp", "unix", "socket") else "socket"
        if family == AF_UNIX:
            identity = FdIdentity("unix", local=old.local, remote=old.remote,
                                  path=text or old.path)
        elif note.op == "connect":
            if note.ret < 0 and note.ret != -115:  # failed, and not EINPROGRESS
                return
            identity = FdIdentity(kind, local=old.local, remote=text or old.remote, path=old.path)
        else:
            identity = FdIdentity(kind, local=text or old.local, remote=old.remote, path=old.path)
        self._set(note.pid, note.fd, identity)
