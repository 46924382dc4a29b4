"""Which protocol a conversation speaks, guessed from the first bytes of each direction.

A guess needs a positive sign (a request line, a RESP command, the HTTP/2
preface, a Postgres startup message); anything else is "unknown", never a
near miss. When the two directions point to different protocols the
answer is "unknown" too.
"""

from wtrec.tools.protocols import http1, http2, postgres, redis

UNKNOWN = "unknown"
FIRST_BYTES = 64  # what the guess looks at per direction
# HTTP/2 first: its preface would also pass for an HTTP/1 "PRI" request line elsewhere
_CHECKS = ((http2.PROTO, http2.looks_like), (http1.PROTO, http1.looks_like),
           (redis.PROTO, redis.looks_like), (postgres.PROTO, postgres.looks_like))


def guess(first_bytes: tuple[bytes, bytes]) -> str:
    """The protocol both directions' first bytes agree on, or UNKNOWN."""
    found = set()
    for first in first_bytes:
        if not first:
            continue
        for name, looks_like in _CHECKS:
            if looks_like(first):
                found.add(name)
                break
    if len(found) == 1:
        return found.pop()
    if found == {http1.PROTO, http2.PROTO} and any(f.startswith(http2.PREFACE[:16]) for f in first_bytes):
        return http2.PROTO
    return UNKNOWN
