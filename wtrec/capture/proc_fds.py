"""Says what an fd that existed before the capture is, from /proc.

Used for descriptors the kernel side saw no socket()/open()/accept() for.
Only works while the process is alive, so the recorder asks early.
"""

import os

from wtrec.capture.sockaddr import AF_INET, AF_INET6
from wtrec.records import FdIdentity

# Paths are built as strings: pathlib interns every component it parses, and
# the interpreter's table of interned strings never shrinks, so a Path per
# pid grew the recorder by ~1 MiB over 20,000 traced processes.
PROC = "/proc"


def _read_text(path: str) -> str:
    with open(path) as file:
        return file.read()


def _hex_inet(text: str) -> tuple[int, bytes, int] | None:
    """'0100007F:2B67' (little-endian words) to (family, address bytes, port)."""
    try:
        address_hex, port_hex = text.split(":")
        port = int(port_hex, 16)
        raw = bytes.fromhex(address_hex)
    except ValueError:
        return None
    # /proc prints each 32-bit word of the address in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return (AF_INET if len(words) == 4 else AF_INET6), words, port


def _inet_text(field: str) -> str | None:
    from wtrec.capture.sockaddr import format_inet

    parsed = _hex_inet(field)
    return format_inet(*parsed) if parsed else None


def _find_inet(pid: int, inode: str) -> FdIdentity | None:
    for table, kind in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        try:
            lines = _read_text(f"{PROC}/{pid}/net/{table}").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] == inode:
                return FdIdentity(kind, local=_inet_text(fields[1]), remote=_remote(fields[2]))
    return None


def _remote(field: str) -> str | None:
    text = _inet_text(field)
    if text in (None, "0.0.0.0:0", "[::]:0"):
        return None
    return text


def _find_unix(pid: int, inode: str) -> FdIdentity | None:
    try:
        lines = _read_text(f"{PROC}/{pid}/net/unix").splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 7 and fields[6] == inode:
            return FdIdentity("unix", path=fields[7] if len(fields) > 7 else None)
    return None


def resolve(pid: int, fd: int) -> FdIdentity | None:
    """What /proc says fd is in process pid, or None if the process or fd is gone."""
    try:
        target = os.readlink(f"{PROC}/{pid}/fd/{fd}")
    except OSError:
        return None
    return classify_link(pid, target)


def is_tty_path(path: str) -> bool:
    return path.startswith(("/dev/pts/", "/dev/tty")) or path == "/dev/console"


def classify_link(pid: int, target: str) -> FdIdentity:
    if target.startswith("socket:["):
        inode = target[len("socket:["):-1]
        return _find_inet(pid, inode) or _find_unix(pid, inode) or FdIdentity("socket")
    if target.startswith("pipe:["):
        return FdIdentity("pipe")
    if is_tty_path(target):
        return FdIdentity("tty", path=target)
    if target.startswith("/"):
        return FdIdentity("file", path=target)
    return FdIdentity("other", path=target)
