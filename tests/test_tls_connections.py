"""Which socket a TLS call used, from what the kernel side saw (plain data, no root).

The cases are what the prototype in the tls note recorded for real programs:
curl and wget do their socket I/O inside the call; node feeds OpenSSL through
memory BIOs, so its calls see no socket syscall (and its first SSL_write
reads /etc/localtime).
"""

from wtrec.capture.tls_connections import FD_SOURCES, CallFd, TlsCall, TlsConnections
from wtrec.records import FdIdentity

CURL, NODE = 100, 200


def fd_table(kinds: dict[tuple[int, int], str]):
    def identity(pid: int, fd: int) -> FdIdentity:
        return FdIdentity(kinds.get((pid, fd), "unknown"))
    return identity


def test_library_doing_its_own_io_is_named_by_the_call():
    connections = TlsConnections(fd_table({(CURL, 5): "tcp", (CURL, 1): "tty"}))
    write = TlsCall(CURL, conn=0x55BA, direction="out", in_call=(CallFd(5, sent=105),))
    read = TlsCall(CURL, conn=0x55BA, direction="in", in_call=(CallFd(5, received=179),),
                   before_read_fd=5, before_write_fd=1)
    assert connections.resolve(write) == (5, "in-call")
    assert connections.resolve(read) == (5, "in-call")


def test_in_call_prefers_the_socket_moving_bytes_in_the_calls_direction():
    kinds = {(CURL, 5): "tcp", (CURL, 7): "tcp", (CURL, 9): "file"}
    connections = TlsConnections(fd_table(kinds))
    call = TlsCall(CURL, conn=1, direction="out",
                   in_call=(CallFd(9, sent=4096), CallFd(7, received=300), CallFd(5, sent=40)))
    assert connections.resolve(call) == (5, "in-call")
    # a socket touched only the other way still names it when nothing else does
    only_reads = TlsCall(CURL, conn=2, direction="out", in_call=(CallFd(7, received=30),))
    assert connections.resolve(only_reads) == (7, "in-call")


def test_memory_bio_program_node():
    # node: socket 19; fd 20 is /etc/localtime, read inside the first SSL_write
    connections = TlsConnections(fd_table({(NODE, 19): "tcp", (NODE, 20): "file"}))
    first_write = TlsCall(NODE, conn=0x1CE0, direction="out", in_call=(CallFd(20, received=174),),
                          before_read_fd=19, before_write_fd=19)
    assert connections.resolve(first_write) == (19, "thread")
    reply = TlsCall(NODE, conn=0x1CE0, direction="in", before_read_fd=19, before_write_fd=19)
    assert connections.resolve(reply) == (19, "thread")


def test_writes_follow_the_handle_not_the_threads_last_write():
    # two connections on one event-loop thread: the last write went to the
    # other one, but this handle was tied to fd 21 by its read
    kinds = {(NODE, 19): "tcp", (NODE, 21): "tcp"}
    connections = TlsConnections(fd_table(kinds))
    connections.resolve(TlsCall(NODE, conn=0xB, direction="in", before_read_fd=21))
    write = TlsCall(NODE, conn=0xB, direction="out", before_read_fd=19, before_write_fd=19)
    assert connections.resolve(write) == (21, "connection")


def test_unknown_when_nothing_points_at_a_socket():
    connections = TlsConnections(fd_table({(NODE, 3): "pipe"}))
    call = TlsCall(NODE, conn=9, direction="in", in_call=(CallFd(3, received=8),), before_read_fd=3)
    assert connections.resolve(call) == (-1, "unknown")


def test_a_closed_fd_or_exited_process_is_forgotten():
    kinds = {(NODE, 19): "tcp"}
    connections = TlsConnections(fd_table(kinds))
    connections.resolve(TlsCall(NODE, conn=0xA, direction="in", before_read_fd=19))
    connections.forget_fd(NODE, 19)
    again = TlsCall(NODE, conn=0xA, direction="out")
    assert connections.resolve(again) == (-1, "unknown")
    connections.resolve(TlsCall(NODE, conn=0xA, direction="in", before_read_fd=19))
    connections.forget_process(NODE)
    assert connections.resolve(again) == (-1, "unknown")


def test_sources_are_the_documented_ones():
    assert FD_SOURCES == ("in-call", "thread", "connection", "unknown")
