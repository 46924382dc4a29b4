"""Reads the UAPI socket address structs a process passed to the kernel."""

import ipaddress
import struct

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
SOCK_STREAM, SOCK_DGRAM = 1, 2


def format_inet(family: int, address: bytes, port: int) -> str | None:
    """'1.2.3.4:80' or '[::1]:80' from raw address bytes and a host-order port."""
    if family == AF_INET and len(address) >= 4:
        return f"{ipaddress.IPv4Address(address[:4])}:{port}"
    if family == AF_INET6 and len(address) >= 16:
        return f"[{ipaddress.IPv6Address(address[:16])}]:{port}"
    return None


def parse_sockaddr(blob: bytes) -> tuple[int, str | None]:
    """(family, text): an inet 'address:port', or a unix path ('@name' if abstract)."""
    if len(blob) < 2:
        return 0, None
    family = struct.unpack_from("<H", blob)[0]
    if family == AF_INET and len(blob) >= 8:
        port = struct.unpack_from(">H", blob, 2)[0]
        return family, format_inet(family, blob[4:8], port)
    if family == AF_INET6 and len(blob) >= 24:
        port = struct.unpack_from(">H", blob, 2)[0]
        return family, format_inet(family, blob[8:24], port)
    if family == AF_UNIX:
        path = blob[2:]
        if path[:1] == b"\0":
            name = path[1:].split(b"\0", 1)[0]
            return family, "@" + name.decode("utf-8", "backslashreplace") if name else None
        path = path.split(b"\0", 1)[0]
        return family, path.decode("utf-8", "backslashreplace") or None
    return family, None


def socket_kind(family: int, sock_type: int) -> str:
    """tcp, udp, unix or socket, from socket(2)'s family and type arguments."""
    if family == AF_UNIX:
        return "unix"
    if family in (AF_INET, AF_INET6):
        base = sock_type & 0xF
        return {SOCK_STREAM: "tcp", SOCK_DGRAM: "udp"}.get(base, "socket")
    return "socket"
