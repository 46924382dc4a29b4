"""Protocol decoders for conversations: HTTP/1.x, HTTP/2, Redis RESP, Postgres.

What other modules may use: `new_decoder(proto)`, `guess` (detection),
the Message and Note types, PROTOCOLS and UNKNOWN. One module per protocol;
each decoder takes the two flows of one conversation and never raises on
what it is fed (tests/test_conversations.py holds them to it).
"""

from wtrec.tools.protocols.base import MAX_HELD, ConversationDecoder, Message, Note, Output, duration_text
from wtrec.tools.protocols.detect import FIRST_BYTES, UNKNOWN, guess
from wtrec.tools.protocols.http1 import Http1Decoder
from wtrec.tools.protocols.http2 import Http2Decoder
from wtrec.tools.protocols.postgres import PostgresDecoder
from wtrec.tools.protocols.redis import RedisDecoder

_DECODERS: dict[str, type[ConversationDecoder]] = {
    Http1Decoder.proto: Http1Decoder, Http2Decoder.proto: Http2Decoder,
    RedisDecoder.proto: RedisDecoder, PostgresDecoder.proto: PostgresDecoder}
PROTOCOLS = tuple(_DECODERS)


def new_decoder(proto: str) -> ConversationDecoder:
    """A fresh decoder for one conversation in `proto` (one of PROTOCOLS)."""
    return _DECODERS[proto]()


__all__ = ["FIRST_BYTES", "MAX_HELD", "PROTOCOLS", "UNKNOWN", "ConversationDecoder", "Message", "Note",
           "Output", "duration_text", "guess", "new_decoder"]
