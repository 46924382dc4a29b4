"""Conversations: the connections of a capture, each side's bytes as two flows in time order.

A side is one (pid, fd) while it keeps one identity (the fd-name tracker
says which); a conversation is one side, or two when both ends of a TCP
connection were traced in the capture (paired by their address 4-tuple).
A conversation has two flows: flow 0 the bytes its first side sent, flow
1 the bytes it received; when both ends were traced the first side is the
one that connected (the client), so -> always reads "client sent". Each
flow is then read from the side that captured more of it, so nothing is
decoded twice.

Reading takes two passes over the capture: `list_conversations` learns the
sides, pairs them and guesses each protocol; `iter_pieces` then hands out
each flow's bytes with the gaps (snaplen cuts, lost records) where they
happen, and `iter_messages` runs the protocol decoders over them.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from wtrec.format import Counts
from wtrec.records import FdIdentity, FdInfo, IoEvent, Lost, Record
from wtrec.tools.fd_names import FdNames
from wtrec.tools.protocols import FIRST_BYTES, UNKNOWN, Message, Note, guess, new_decoder

# "unknown": the recorder could not name it, and a socket whose accept() it missed looks so
CONNECTION_KINDS = ("tcp", "udp", "unix", "socket", "unknown")
SideKey = tuple[int, int, FdIdentity | None]


@dataclass
class Side:
    """One (pid, fd) with one identity: what it sent (out) and received (into)."""

    pid: int
    fd: int
    comm: bytes
    identity: FdIdentity | None
    first_ns: int
    last_ns: int
    out: Counts = field(default_factory=Counts)
    into: Counts = field(default_factory=Counts)
    first_out: bytes = b""
    first_in: bytes = b""
    # the first call that did not fail (a failed read says nothing of who spoke first)
    first_ok_ns: int | None = None
    first_ok_direction: str = ""

    @property
    def key(self) -> SideKey:
        return (self.pid, self.fd, self.identity)

    def counts(self, direction: str) -> Counts:
        return self.into if direction == "in" else self.out


@dataclass
class Conversation:
    """One connection: one or two sides, and where each flow's bytes are read from."""

    number: int
    sides: list[Side]
    proto: str = UNKNOWN
    # per flow: (index into sides, direction of that side's events)
    sources: tuple[tuple[int, str], tuple[int, str]] = ((0, "out"), (0, "in"))

    @property
    def first_ns(self) -> int:
        return min(s.first_ns for s in self.sides)

    @property
    def last_ns(self) -> int:
        return max(s.last_ns for s in self.sides)

    def flow_counts(self, flow: int) -> Counts:
        side, direction = self.sources[flow]
        return self.sides[side].counts(direction)

    def source_side(self, flow: int) -> tuple[Side, str]:
        side, direction = self.sources[flow]
        return self.sides[side], direction


def payload(event: IoEvent) -> tuple[bytes, int]:
    """(the bytes that crossed the connection as captured, how many more crossed uncaptured)."""
    if event.ret is not None and event.ret < 0:
        return b"", 0
    if event.direction == "in":
        whole = event.expected
    else:
        whole = event.count if event.ret is None else event.ret
    data = event.data[:whole]
    return data, max(whole - len(data), 0)


def is_connection(identity: FdIdentity | None) -> bool:
    """Sockets, and descriptors the capture could not name (they may be sockets)."""
    return identity is None or identity.kind in CONNECTION_KINDS


@dataclass
class Listing:
    """The conversations of a capture, numbered, and how many unnamed fds were left out."""

    conversations: list[Conversation]
    hidden: int = 0


def list_conversations(records: Iterable[Record], *, every_fd: bool = False) -> Listing:
    """Every connection of the capture (every fd with `every_fd`), paired and guessed.

    A descriptor the recorder could not name is listed when it speaks a
    protocol we know (it is then surely a socket); otherwise it is counted
    in `hidden`, so stdio the recorder missed does not bury the connections.
    """
    names = FdNames()
    sides: dict[SideKey, Side] = {}
    for event in names.events(records):
        identity = names.get(event.pid, event.fd)
        if not every_fd and not is_connection(identity):
            continue
        key = (event.pid, event.fd, identity)
        side = sides.get(key)
        if side is None:
            side = sides[key] = Side(event.pid, event.fd, event.comm, identity, event.ts_ns, event.ts_ns)
        side.last_ns = max(side.last_ns, event.ts_ns)
        side.first_ns = min(side.first_ns, event.ts_ns)
        side.counts(event.direction).add(event)
        succeeded = event.ret is None or event.ret >= 0
        if succeeded and (side.first_ok_ns is None or event.ts_ns < side.first_ok_ns):
            side.first_ok_ns, side.first_ok_direction = event.ts_ns, event.direction
        data, _missing = payload(event)
        if event.direction == "in":
            if len(side.first_in) < FIRST_BYTES:
                side.first_in = (side.first_in + data)[:FIRST_BYTES]
        elif len(side.first_out) < FIRST_BYTES:
            side.first_out = (side.first_out + data)[:FIRST_BYTES]
    listing = Listing([])
    for conversation in pair_sides(list(sides.values())):
        conversation.proto = guess((_first_bytes(conversation, 0), _first_bytes(conversation, 1)))
        unnamed = all(s.identity is not None and s.identity.kind == "unknown" for s in conversation.sides)
        if unnamed and conversation.proto == UNKNOWN and not every_fd:
            listing.hidden += 1
            continue
        conversation.number = len(listing.conversations) + 1
        listing.conversations.append(conversation)
    return listing


def _first_bytes(conversation: Conversation, flow: int) -> bytes:
    side, direction = conversation.source_side(flow)
    return side.first_in if direction == "in" else side.first_out


def pair_sides(sides: list[Side]) -> list[Conversation]:
    """Sides become conversations, the two ends of a traced TCP connection one together.

    Ends pair by their address 4-tuple. When the capture knows only part
    of a tuple (an accept() that asked for no peer address, a bind() to
    port 0), two ends whose known addresses mirror each other pair only if
    their first bytes agree (what one sent is what the other received) and
    no other end would fit as well.
    """
    ordered = sorted(sides, key=lambda s: s.first_ns)
    ends = {s.key: _ends(s) for s in ordered}
    tcp = [s for s in ordered if any(ends[s.key])]
    peers: dict[SideKey, Side] = {}
    by_tuple: dict[tuple[str | None, str | None], list[Side]] = {}
    for side in tcp:
        by_tuple.setdefault(ends[side.key], []).append(side)
    for side in tcp:
        local, remote = ends[side.key]
        if side.key in peers or not (local and remote):
            continue
        for peer in by_tuple.get((remote, local), []):
            if peer.key not in peers and peer.key != side.key:
                peers[side.key], peers[peer.key] = peer, side
                break
    for side in tcp:
        if side.key not in peers:
            others = [s for s in tcp if s.key not in peers and s.key != side.key]
            half = _partly_known_peer(side, ends, others)
            if half is not None:
                peers[side.key], peers[half.key] = half, side
    listening = _listening_ports(tcp, ends)
    conversations: list[Conversation] = []
    done: set[SideKey] = set()
    for side in ordered:
        if side.key in done:
            continue
        members = [side] if side.key not in peers else _connecting_first(side, peers[side.key], listening)
        done.update(m.key for m in members)
        conversations.append(Conversation(len(conversations) + 1, members, sources=_sources(members)))
    return conversations


def _port(address: str | None) -> str | None:
    return address.rsplit(":", 1)[1] if address and ":" in address else None


def _listening_ports(tcp: list[Side], ends: dict[SideKey, tuple[str | None, str | None]]) -> set[str]:
    """Local addresses two or more ends share: a listening socket's, which accept() hands on."""
    seen: dict[str, int] = {}
    for side in tcp:
        local = ends[side.key][0]
        if local:
            seen[local] = seen.get(local, 0) + 1
    return {local for local, count in seen.items() if count > 1}


EPHEMERAL_PORTS = 32768  # Linux's default ip_local_port_range starts here; servers listen below


def _connecting_first(one: Side, other: Side, listening: set[str]) -> list[Side]:
    """The two ends of a connection, the one that connected (the client) first.

    Its remote address is the other's listening one (shared by several
    accepted connections), or else its own port is ephemeral and the
    other's is not; failing both, it is the end whose first successful
    call was a send, and failing that the one that succeeded first. Failed
    calls (an EAGAIN read of a server waiting) never decide.
    """
    for client, server in ((one, other), (other, one)):
        if _ends(client)[1] in listening and _ends(server)[0] in listening:
            return [client, server]
    for client, server in ((one, other), (other, one)):
        mine, theirs = _port(_ends(client)[0]), _port(_ends(server)[0])
        if mine and theirs and int(mine) >= EPHEMERAL_PORTS > int(theirs):
            return [client, server]
    sends = [s for s in (one, other) if s.first_ok_direction == "out"]
    if len(sends) == 1:
        return [sends[0], other if sends[0] is one else one]
    never = 1 << 64
    return sorted((one, other), key=lambda s: never if s.first_ok_ns is None else s.first_ok_ns)


def _ends(side: Side) -> tuple[str | None, str | None]:
    """A TCP side's (local, remote), each None where unknown (port 0 is never a connected end)."""
    ident = side.identity
    if ident is None or ident.kind != "tcp":
        return (None, None)

    def known(address: str | None) -> str | None:
        return address if address and not address.endswith(":0") else None

    return (known(ident.local), known(ident.remote))


def _partly_known_peer(side: Side, ends: dict[SideKey, tuple[str | None, str | None]],
                       candidates: list[Side]) -> Side | None:
    local, remote = ends[side.key]
    found = []
    for other in candidates:
        their_local, their_remote = ends[other.key]
        pairs = [(local, their_remote), (remote, their_local)]
        known = [(a, b) for a, b in pairs if a and b]
        if not known or any(a != b for a, b in known):
            continue
        if _agree(side.first_out, other.first_in) and _agree(side.first_in, other.first_out) \
                and (side.first_out or side.first_in):
            found.append(other)
    return found[0] if len(found) == 1 else None


def _agree(sent: bytes, received: bytes) -> bool:
    """Both empty, or both begin alike (what one end sent, the other read)."""
    common = min(len(sent), len(received))
    if not common:
        return not sent and not received
    return sent[:common] == received[:common]


def _sources(members: list[Side]) -> tuple[tuple[int, str], tuple[int, str]]:
    """Each flow from the side that captured more of it (the first side on a tie)."""
    if len(members) == 1:
        return ((0, "out"), (0, "in"))
    first, second = members
    sent = (0, "out") if first.out.captured >= second.into.captured else (1, "in")
    received = (0, "in") if first.into.captured >= second.out.captured else (1, "out")
    return (sent, received)


@dataclass
class Piece:
    """Bytes of one flow of one conversation, as one event carried them."""

    conversation: Conversation
    flow: int
    event: IoEvent
    data: bytes
    missing: int  # bytes after `data` that crossed but were not captured


def iter_pieces(records: Iterable[Record], conversations: list[Conversation]) -> Iterator[Piece | Lost]:
    """The conversations' bytes in file order, and every Lost record where it happened."""
    routes: dict[tuple[SideKey, str], tuple[Conversation, int]] = {}
    for conversation in conversations:
        for flow, (side, direction) in enumerate(conversation.sources):
            routes[(conversation.sides[side].key, direction)] = (conversation, flow)
    names = FdNames()
    for record in records:
        if isinstance(record, IoEvent):
            route = routes.get(((record.pid, record.fd, names.get(record.pid, record.fd)),
                                record.direction))
            if route is not None:
                data, missing = payload(record)
                if data or missing:
                    yield Piece(route[0], route[1], record, data, missing)
        elif isinstance(record, Lost):
            yield record
        elif isinstance(record, FdInfo):
            names.learn(record)


@dataclass
class Decoded:
    """A decoder's output with the conversation and the source side it came from."""

    conversation: Conversation
    side: Side
    direction: str
    item: Message | Note | None  # None: the conversation speaks no protocol we know


def iter_messages(records: Iterable[Record], conversations: list[Conversation], *,
                  proto: str | None = None) -> Iterator[Decoded]:
    """Decodes every conversation (as `proto`, or as guessed); unknown ones are said once."""
    decoders = {}
    for conversation in conversations:
        chosen = proto or conversation.proto
        if chosen != UNKNOWN:
            decoders[conversation.number] = new_decoder(chosen)

    def tag(conversation: Conversation, items: Iterable[Message | Note]) -> Iterator[Decoded]:
        for item in items:
            side, direction = conversation.source_side(item.flow)
            yield Decoded(conversation, side, direction, item)

    said_unknown: set[int] = set()
    last_ts: dict[int, int] = {}  # per conversation: its last piece, when what is open at the end is said
    for piece in iter_pieces(records, conversations):
        if isinstance(piece, Lost):
            for conversation in conversations:
                decoder = decoders.get(conversation.number)
                if decoder is not None and conversation.first_ns <= piece.ts_ns <= conversation.last_ns:
                    for flow in (0, 1):
                        yield from tag(conversation, decoder.gap(flow, None, piece.ts_ns))
            continue
        conversation = piece.conversation
        last_ts[conversation.number] = piece.event.ts_ns
        decoder = decoders.get(conversation.number)
        if decoder is None:
            if conversation.number not in said_unknown:
                said_unknown.add(conversation.number)
                side, direction = conversation.source_side(piece.flow)
                yield Decoded(conversation, side, direction, None)
            continue
        ts = piece.event.ts_ns
        if piece.data:
            yield from tag(conversation, decoder.feed(piece.flow, piece.data, ts))
        if piece.missing:
            yield from tag(conversation, decoder.gap(piece.flow, piece.missing, ts))
    for conversation in conversations:
        decoder = decoders.get(conversation.number)
        if decoder is not None:
            end = last_ts.get(conversation.number, conversation.last_ns)
            yield from tag(conversation, decoder.finish(end))
