"""Names the socket under each TLS library call, without reading library structs.

For each TLS call (SSL_write, gnutls_record_recv, ...) the BPF side reports
the data syscalls the thread made during the call (fd, bytes received, bytes
sent), the thread's last successful read-side and write-side fds before the
call, and the library's connection handle (the SSL *, gnutls_session_t or
WOLFSSL * argument: an opaque number, stable for a connection's life).
`TlsConnections` turns that into one fd and says how it knew
(`FD_SOURCES`), so a capture can be honest about a guess.

Rules, first that applies:
1. `in-call`: a socket the call moved bytes on in its own direction (most
   bytes first), else any socket it touched. Libraries that do their own
   socket I/O (OpenSSL with a socket BIO: curl, python; GnuTLS; wolfSSL)
   always land here. Non-sockets are skipped: node's first SSL_write reads
   /etc/localtime while checking the certificate.
2. For reads, `thread`: the socket the thread last read from before the
   call. Programs that feed the library through memory BIOs (node: libuv
   reads the ciphertext, then calls SSL_read) land here.
3. `connection`: the fd this (pid, handle) was last tied to.
4. For writes, `thread`: the socket the thread last wrote to (node's
   handshake writes precede its first SSL_write).
5. `unknown`: fd -1.
Plain Python on plain data; the fd kinds come from the recorder's fd table.
"""

from collections.abc import Callable
from dataclasses import dataclass

from wtrec.records import FdIdentity

FD_SOURCES = ("in-call", "thread", "connection", "unknown")
SOCKET_KINDS = frozenset({"tcp", "udp", "unix", "socket"})


@dataclass(frozen=True)
class CallFd:
    """One fd a data syscall used during a TLS call, with what it moved."""

    fd: int
    received: int = 0
    sent: int = 0


@dataclass(frozen=True)
class TlsCall:
    """What the kernel side saw around one TLS library call."""

    pid: int
    conn: int  # the library's connection handle, opaque
    direction: str  # "out" (write entry points) or "in" (read)
    in_call: tuple[CallFd, ...] = ()
    before_read_fd: int = -1
    before_write_fd: int = -1


class TlsConnections:
    """Resolves TLS calls to fds in event order; remembers handle -> fd per process."""

    def __init__(self, identity: Callable[[int, int], FdIdentity]):
        self._identity = identity
        self._by_handle: dict[tuple[int, int], int] = {}

    def _is_socket(self, pid: int, fd: int) -> bool:
        return fd >= 0 and self._identity(pid, fd).kind in SOCKET_KINDS

    def resolve(self, call: TlsCall) -> tuple[int, str]:
        """(fd, how it was found), one of FD_SOURCES; -1 when unknown."""
        fd, source = self._find(call)
        if fd >= 0:
            self._by_handle[(call.pid, call.conn)] = fd
        return fd, source

    def _find(self, call: TlsCall) -> tuple[int, str]:
        sockets = [used for used in call.in_call if self._is_socket(call.pid, used.fd)]
        if sockets:
            def moved(used: CallFd) -> int:
                return used.sent if call.direction == "out" else used.received
            best = max(sockets, key=lambda used: (moved(used) > 0, moved(used)))
            return best.fd, "in-call"
        if call.direction == "in" and self._is_socket(call.pid, call.before_read_fd):
            return call.before_read_fd, "thread"
        known = self._by_handle.get((call.pid, call.conn))
        if known is not None and self._is_socket(call.pid, known):
            return known, "connection"
        if call.direction == "out" and self._is_socket(call.pid, call.before_write_fd):
            return call.before_write_fd, "thread"
        return -1, "unknown"

    def remember(self, pid: int, conn: int, fd: int) -> None:
        """Ties (pid, handle) to fd, as resolve does: for a caller that found the fd itself."""
        self._by_handle[(pid, conn)] = fd

    def forget_fd(self, pid: int, fd: int) -> None:
        """The fd was closed: no handle may lead to it any more (the number gets reused)."""
        for key in [key for key, known in self._by_handle.items() if key[0] == pid and known == fd]:
            del self._by_handle[key]

    def forget_process(self, pid: int) -> None:
        """The process exited: its handles mean nothing now."""
        for key in [key for key in self._by_handle if key[0] == pid]:
            del self._by_handle[key]
