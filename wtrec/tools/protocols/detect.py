"""Which protocol a conversation speaks, guessed from the first bytes of each direction.

A guess needs a positive sign (a request line, a RESP command, the HTTP/2
preface, a Postgres startup message); anything else is "unknown", never a
near miss. When the two directions point to different protocols the
answer is "unknown" too.
"""

from wtrec.tools.protocols import http1, http2, postgres, redis

UNKNOWN = "unknown"
FIRST_BYTES = 64  # what the guess looks at per direction
# (name, a sign of the protocol, what the other direction may then look like);
# HTTP/2 first: its preface would also pass for an HTTP/1 "PRI" request line
_CHECKS = ((http2.PROTO, http2.looks_like, http2.could_answer),
           (http1.PROTO, http1.looks_like, http1.could_answer),
           (redis.PROTO, redis.looks_like, redis.could_answer),
           (postgres.PROTO, postgres.looks_like, postgres.could_answer))


def guess(first_bytes: tuple[bytes, bytes]) -> str:
    """The one protocol that one direction shows a sign of and the other does not contradict."""
    found = []
    for name, looks_like, could_answer in _CHECKS:
        for this, other in (first_bytes, first_bytes[::-1]):
            if this and looks_like(this) and (not other or looks_like(other) or could_answer(other)):
                found.append(name)
                break
    if http2.PROTO in found:  # the preface is unmistakable; a SETTINGS frame is not an HTTP/1 line
        return http2.PROTO
    return found[0] if len(found) == 1 else UNKNOWN
