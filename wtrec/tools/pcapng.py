"""Export to pcapng: each (pid, fd) becomes a synthetic TCP (or UDP) conversation.

Wireshark and tshark then dissect the plaintext (HTTP, Redis, TLS records…)
with all their tools. Packets are raw IPv4/IPv6 (LINKTYPE_RAW) with
nanosecond timestamps; a TCP conversation starts with a handshake, each
direction's sequence number advances by the bytes the syscall moved, so a
payload the capture cut short shows as a gap ("previous segment not
captured"), and every packet carries the process facts as a comment.
Addresses come from the fd records; made-up, stable ones stand in for
anything else (10.1.x.y for the traced process, 10.2.x.y for its peer,
from the pid; ports from the fd).
"""

import ipaddress
import struct
import sys
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from wtrec.errors import FormatError
from wtrec.records import FdIdentity, Header, IoEvent, Record
from wtrec.tools.fd_names import FdNames
from wtrec.tools.render import escape_bytes, escape_text

LINKTYPE_RAW = 101
SEGMENT_MAX = 65000
SYN, ACK, PSH = 0x02, 0x10, 0x08
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


OPTION_MAX = 0xFFFF  # an option's length is 16 bits
COMMENT_MAX = 4096  # bytes of a packet comment; a longer one is cut and marked


def _options(*pairs: tuple[int, bytes]) -> bytes:
    out = b""
    for code, value in pairs:
        if len(value) > OPTION_MAX:
            value = value[:OPTION_MAX - 3] + b"..."
        out += struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    return out + struct.pack("<HH", 0, 0)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def section_header(application: str) -> bytes:
    body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _options((4, application.encode()))
    return _block(0x0A0D0D0A, body)


def interface_description() -> bytes:
    body = struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + _options((2, b"wtrec"), (9, bytes([9])))
    return _block(1, body)


def enhanced_packet(wall_ns: int, packet: bytes, original_length: int, comment: str) -> bytes:
    if not 0 <= wall_ns < 1 << 64:
        raise FormatError(f"an event's wall-clock time ({wall_ns} ns since 1970) does not fit "
                          "pcapng's 64-bit timestamp; the capture's clock anchors are wrong")
    body = struct.pack("<IIIII", 0, wall_ns >> 32, wall_ns & 0xFFFFFFFF, len(packet),
                       original_length)
    text = comment.encode()
    if len(text) > COMMENT_MAX:
        text = text[:COMMENT_MAX - 3] + b"..."
    body += packet + b"\0" * (-len(packet) % 4) + _options((1, text))
    return _block(6, body)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(array("H", data))  # native order; one's-complement sums survive a byte swap
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    value = ~total & 0xFFFF
    return ((value & 0xFF) << 8) | (value >> 8) if sys.byteorder == "little" else value


def _ip_packet(src: IPAddress, dst: IPAddress, proto: int, transport: bytes) -> bytes:
    """An IP packet around `transport`, whose checksum field (TCP 16, UDP 6) is filled in."""
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(transport))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(transport), proto)
    where = 16 if proto == 6 else 6
    checksum = _checksum(pseudo + transport) or (0xFFFF if proto == 17 else 0)
    transport = transport[:where] + struct.pack("!H", checksum) + transport[where + 2:]
    if src.version == 4:
        head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(transport), 0, 0x4000, 64, proto,
                           0, src.packed, dst.packed)
        head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
        return head + transport
    return struct.pack("!IHBB16s16s", 6 << 28, len(transport), proto, 64, src.packed,
                       dst.packed) + transport


def _endpoint(text: str | None) -> tuple[IPAddress, int] | None:
    if not text:
        return None
    host, _sep, port = text.rpartition(":")
    try:
        address, number = ipaddress.ip_address(host.strip("[]")), int(port)
    except ValueError:
        return None
    return (address, number) if 0 <= number <= 0xFFFF else None


@dataclass
class _Conversation:
    local: tuple[IPAddress, int]
    remote: tuple[IPAddress, int]
    udp: bool
    comment: str
    local_seq: int = 0
    remote_seq: int = 0
    opened: bool = False


def _made_up(pid: int, fd: int, side: int) -> tuple[IPAddress, int]:
    """10.1.x.y:4nnnn for the traced process (a client), 10.2.x.y:1nnnn for its peer."""
    port = (40000 if side == 1 else 10000) + fd % 20000
    return ipaddress.IPv4Address(f"10.{side}.{(pid >> 8) & 0xFF}.{pid & 0xFF}"), port


def _conversation(pid: int, fd: int, identity: FdIdentity | None) -> _Conversation:
    local = _endpoint(identity.local) if identity else None
    remote = _endpoint(identity.remote) if identity else None
    if local is None or remote is None or local[0].version != remote[0].version:
        local, remote = _made_up(pid, fd, 1), _made_up(pid, fd, 2)
    what = identity.describe() if identity else "unknown"
    seed = zlib.crc32(f"{pid}/{fd}".encode())
    return _Conversation(local, remote, bool(identity and identity.kind == "udp"),
                         f"fd {fd} ({escape_text(what)})",
                         local_seq=seed, remote_seq=seed ^ 0x5A5A5A5A)


class PcapngWriter:
    """Turns records, in file order, into pcapng blocks on `out`."""

    def __init__(self, out: BinaryIO, header: Header, application: str):
        self.out = out
        self.header = header
        self.names = FdNames()
        self.conversations: dict[tuple[int, int, FdIdentity | None], _Conversation] = {}
        self.packets = 0
        out.write(section_header(application) + interface_description())

    def write_all(self, records: Iterable[Record]) -> None:
        for event in self.names.events(records):
            self.event(event)

    def _packet(self, conv: _Conversation, wall_ns: int, outbound: bool, flags: int,
                payload: bytes, moved: int, comment: str) -> None:
        src, dst = (conv.local, conv.remote) if outbound else (conv.remote, conv.local)
        if conv.udp:
            transport = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
            packet = _ip_packet(src[0], dst[0], 17, transport)
        else:
            seq, ack = ((conv.local_seq, conv.remote_seq) if outbound
                        else (conv.remote_seq, conv.local_seq))
            ack = ack if flags & ACK else 0
            transport = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF,
                                    ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0) + payload
            packet = _ip_packet(src[0], dst[0], 6, transport)
            if outbound:
                conv.local_seq += moved
            else:
                conv.remote_seq += moved
        self.out.write(enhanced_packet(wall_ns, packet, len(packet), comment))
        self.packets += 1

    def _open(self, conv: _Conversation, wall_ns: int) -> None:
        """A three-way handshake; the side on the well-known port is the server."""
        conv.opened = True
        if conv.udp:
            return
        local_serves = conv.local[1] < conv.remote[1] and conv.local[1] < 32768
        first = not local_serves  # True: the traced process sent the SYN
        note = "synthetic handshake"
        self._packet(conv, wall_ns, first, SYN, b"", 1, note)
        self._packet(conv, wall_ns, not first, SYN | ACK, b"", 1, note)
        self._packet(conv, wall_ns, first, ACK, b"", 0, note)

    def event(self, event: IoEvent) -> None:
        if event.ret is not None and event.ret < 0:
            return  # failed: nothing crossed the connection
        identity = self.names.get(event.pid, event.fd)
        key = (event.pid, event.fd, identity)
        conv = self.conversations.get(key)
        if conv is None:
            conv = self.conversations[key] = _conversation(event.pid, event.fd, identity)
        wall_ns = self.header.wall_ns(event.ts_ns)
        if not conv.opened:
            self._open(conv, wall_ns)
        moved = event.expected if event.ret is None else event.ret
        data = event.data[:moved]
        comment = (f"pid {event.pid} tid {event.tid} comm {escape_bytes(event.comm)} "
                   f"{conv.comment} {escape_text(event.syscall)}"
                   + ("" if event.seq is None else f" #{event.seq}")
                   + f" count {event.count} ret {event.ret} captured {len(event.data)}"
                   + (" (truncated)" if event.truncated else ""))
        outbound = event.direction == "out"
        if not data:
            # nothing captured: advance the sequence so the gap shows
            if outbound:
                conv.local_seq += moved
            else:
                conv.remote_seq += moved
            return
        for start in range(0, len(data), SEGMENT_MAX):
            segment = data[start:start + SEGMENT_MAX]
            last = start + SEGMENT_MAX >= len(data)
            advance = (moved - start) if last else len(segment)
            self._packet(conv, wall_ns, outbound, ACK | PSH, segment, advance, comment)
