"""Conversations and protocol decoders on crafted bytes and captures (no root needed)."""

import base64
import itertools
import json
import struct
import subprocess
import sys
import tracemalloc

import h2.config
import h2.connection
import pytest
from conftest import build_capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from wtrec.cli.app import app
from wtrec.records import FdIdentity, FdInfo, IoEvent, Lost
from wtrec.tools.conversations import Side, pair_sides
from wtrec.tools.protocols import PROTOCOLS, Message, Note, guess, new_decoder
from wtrec.tools.protocols.http2 import PREFACE

runner = CliRunner()
BASE = 1_000_000_000


def pg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">i", len(body) + 4) + body


def pg_startup() -> bytes:
    params = b"user\0alice\0database\0shop\0\0"
    return struct.pack(">ii", len(params) + 8, 196608) + params


def h2_exchange() -> list[tuple[int, bytes]]:
    """Two requests on one h2c connection; the second's headers come from the HPACK table."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    segments = []
    for stream_id, path in ((1, "/first"), (3, "/second")):
        client.send_headers(stream_id, [(":method", "GET"), (":path", path), (":scheme", "http"),
                                        (":authority", "shop"), ("x-trace", "same-value")],
                            end_stream=True)
        request = client.data_to_send()
        server.receive_data(request)
        server.send_headers(stream_id, [(":status", "200"), ("content-type", "text/plain")])
        server.send_data(stream_id, b"body of " + path.encode(), end_stream=True)
        response = server.data_to_send()
        client.receive_data(response)
        segments += [(0, request), (1, response)]
    return segments


HTTP1 = [
    (0, b"GET /index.html HTTP/1.1\r\nHost: shop\r\n\r\n"
        b"POST /form HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello"),  # pipelined
    (1, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabc"),
    (0, b"HEAD /big HTTP/1.1\r\n\r\n"),
    (1, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"),  # HEAD: no body follows
]
REDIS = [
    (0, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
    (1, b"+OK\r\n$1\r\nv\r\n"),
    (0, b"PING\r\n*1\r\n$7\r\nHGETALL\r\n"),
    (1, b"-ERR wrong\r\n*2\r\n:1\r\n*2\r\n$-1\r\n+x\r\n"),
]
POSTGRES = [
    (0, pg_startup()),
    (1, pg(b"R", struct.pack(">i", 0)) + pg(b"S", b"server_version\x0016\0") + pg(b"Z", b"I")),
    (0, pg(b"Q", b"select 1\0")),
    (1, pg(b"T", b"\0\1one\0" + bytes(18)) + pg(b"D", b"\0\1\0\0\0\0011") + pg(b"C", b"SELECT 1\0")
        + pg(b"Z", b"I")),
    (0, pg(b"P", b"s1\0select $1\0\0\0") + pg(b"B", b"\0s1\0\0\0\0\1\0\0\0\0042026") + pg(b"E", b"\0\0\0\0\0")
        + pg(b"S", b"")),
    (1, pg(b"1", b"") + pg(b"2", b"") + pg(b"E", b"SERROR\0C42601\0Msyntax error\0\0") + pg(b"Z", b"I")),
]
CONVERSATIONS = {"http": HTTP1, "redis": REDIS, "postgres": POSTGRES, "http2": h2_exchange()}


def decode(proto: str, feeds: list[tuple[int, bytes, int]], finish: bool = True) -> list:
    """Feeds (flow, bytes, ts) to a fresh decoder; the outputs as comparable tuples."""
    decoder = new_decoder(proto)
    out = []
    for flow, data, ts in feeds:
        out += decoder.feed(flow, data, ts)
    if finish:
        out += decoder.finish(10_000)
    return [as_tuple(item) for item in out]


def as_tuple(item):
    if isinstance(item, Message):
        return ("message", item.flow, item.ts_ns, json.dumps(item.fields, sort_keys=True), item.incomplete)
    assert isinstance(item, Note)
    return ("note", item.flow, item.text)


def whole(proto: str) -> list[tuple[int, bytes, int]]:
    return [(flow, data, ts) for ts, (flow, data) in enumerate(CONVERSATIONS[proto])]


def messages_of(outputs) -> list[dict]:
    return [json.loads(o[3]) for o in outputs if o[0] == "message"]


@pytest.mark.parametrize("proto", sorted(CONVERSATIONS))
def test_every_split_of_every_write_gives_the_same_messages(proto):
    expected = decode(proto, whole(proto))
    assert expected and all(o[0] == "message" and not o[4] for o in expected), expected
    longest = max(len(data) for _flow, data, _ts in whole(proto))
    for cut in range(1, longest):
        feeds = []
        for flow, data, ts in whole(proto):
            feeds += [(flow, data[:cut], ts), (flow, data[cut:], ts)]
        assert decode(proto, feeds) == expected, f"split at {cut}"
    one_byte = [(flow, data[i:i + 1], ts) for flow, data, ts in whole(proto) for i in range(len(data))]
    assert decode(proto, one_byte) == expected


@pytest.mark.parametrize("proto", sorted(CONVERSATIONS))
def test_a_conversation_cut_anywhere_ends_with_an_incomplete_message_never_an_error(proto):
    full = decode(proto, whole(proto))
    stream = [(flow, data[i:i + 1], ts) for flow, data, ts in whole(proto) for i in range(len(data))]
    for cut in range(len(stream)):
        got = decode(proto, stream[:cut])
        complete = [o for o in got if o[0] == "message" and not o[4]]
        assert complete == full[:len(complete)], f"cut at byte {cut}"
        rest = got[len(complete):]
        assert all(o[0] == "note" or o[4] for o in rest), f"cut at byte {cut}: {rest}"


def test_http_fields_latency_pipelining_chunked_and_head():
    feeds = [(flow, data, ts * 1_000_000) for flow, data, ts in whole("http")]
    got = messages_of(decode("http", feeds))
    assert [(m.get("method"), m.get("target"), m.get("status"), m.get("body_len")) for m in got] == [
        ("GET", "/index.html", None, 0), ("POST", "/form", None, 5), (None, None, 200, 11),
        (None, None, 201, 3), ("HEAD", "/big", None, 0), (None, None, 200, 0)]
    assert got[2]["latency_ns"] == 1_000_000 and got[2]["reason"] == "OK"
    assert got[3]["latency_ns"] == 1_000_000
    assert got[0]["headers"] == [["Host", "shop"]]


def test_a_message_is_timed_by_its_first_byte_and_its_response_by_the_request():
    got = decode("http", [(0, b"GET /slow HTTP/1.1\r\n", 100), (0, b"Host: a\r\n\r\n", 250),
                          (1, b"HTTP/1.1 200 OK\r\nContent-", 900), (1, b"Length: 0\r\n\r\n", 950)])
    assert [(o[2], json.loads(o[3]).get("latency_ns")) for o in got] == [(100, None), (900, 800)]


def test_http_interim_response_leaves_the_request_waiting_for_its_final_one():
    got = messages_of(decode("http", [(0, b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", 5),
                                      (1, b"HTTP/1.1 100 Continue\r\n\r\n", 7),
                                      (1, b"HTTP/1.1 204 No Content\r\n\r\n", 9)]))
    assert [(m.get("status"), m.get("latency_ns")) for m in got[1:]] == [(100, 2), (204, 4)]


def test_http_body_bytes_the_snaplen_cut_are_counted_and_decoding_goes_on():
    decoder = new_decoder("http")
    out = list(decoder.feed(1, b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + b"x" * 4000, 1))
    out += decoder.gap(1, 6000, 1)
    out += decoder.feed(1, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 2)
    got = [o for o in out if isinstance(o, Message)]
    assert [(m.fields["status"], m.fields["body_len"], m.incomplete) for m in got] == [
        (200, 10000, False), (404, 0, False)]


def test_http_gap_in_a_head_reports_it_incomplete_and_resynchronises():
    decoder = new_decoder("http")
    out = list(decoder.feed(0, b"GET /cut HTTP/1.1\r\nHost: sh", 1))
    out += decoder.gap(0, 100, 1)
    out += decoder.feed(0, b"tail of lost bytes\r\n\r\nGET /next HTTP/1.1\r\n\r\n", 2)
    got = [as_tuple(o) for o in out]
    assert got[0][0] == "message" and got[0][4] and json.loads(got[0][3])["target"] == "/cut"
    assert ("note", 0, "skipped 22 bytes that start no HTTP message") in got
    assert json.loads(got[-1][3])["target"] == "/next" and not got[-1][4]


def test_garbage_before_a_request_is_a_note_then_the_request():
    got = decode("http", [(0, b"\x16\x03\x01garbage\r\n\r\nGET /ok HTTP/1.1\r\n\r\n", 1)])
    assert got[0][0] == "note" and "malformed HTTP" in got[0][2]
    assert messages_of(got)[-1]["target"] == "/ok"


def test_redis_commands_and_replies_of_every_type():
    got = messages_of(decode("redis", whole("redis")))
    assert [m.get("command") for m in got if "command" in m] == [
        ["SET", "k", "v"], ["GET", "k"], ["PING"], ["HGETALL"]]
    assert [m["reply"] for m in got if "reply" in m] == [
        "OK", "v", {"error": "ERR wrong"}, [1, [None, "x"]]]


def test_redis_resp3_map_and_null():
    got = messages_of(decode("redis", [(0, b"*1\r\n$5\r\nHELLO\r\n", 1),
                                       (1, b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n_\r\n", 2)]))
    assert got[1]["reply"] == [["server", "redis"], ["proto", 3]] and got[2]["reply"] is None


def test_http2_headers_are_decoded_with_the_hpack_table_kept_across_the_connection():
    got = messages_of(decode("http2", whole("http2")))
    headers = [(m["stream_id"], dict(m["headers"])) for m in got if m["frame"] == "HEADERS"]
    assert [(s, h.get(":method"), h.get(":path"), h.get(":status"), h.get("x-trace"))
            for s, h in headers] == [(1, "GET", "/first", None, "same-value"),
                                     (1, None, None, "200", None),
                                     (3, "GET", "/second", None, "same-value"),
                                     (3, None, None, "200", None)]
    data = [m for m in got if m["frame"] == "DATA"]
    assert [(m["stream_id"], m["length"]) for m in data] == [(1, 14), (3, 15)]
    assert all("latency_ns" in m for m in got if m["frame"] == "HEADERS" and m["stream_id"] and
               ":status" in dict(m["headers"]))


def test_http2_after_lost_bytes_stops_that_direction_with_a_note():
    decoder = new_decoder("http2")
    (flow0, request), (flow1, response) = h2_exchange()[:2]
    out = list(decoder.feed(0, request[:30], 1))
    out += decoder.gap(0, 50, 1)
    out += decoder.feed(0, request[80:], 2)
    out += decoder.feed(1, response, 3)
    notes = [o.text for o in out if isinstance(o, Note)]
    assert any("HTTP/2 decoding of this direction stops" in n for n in notes)
    assert any(isinstance(o, Message) and o.flow == 1 and o.fields["frame"] == "DATA" for o in out)


def test_postgres_startup_simple_and_extended_query():
    got = messages_of(decode("postgres", whole("postgres")))
    assert [m["type"] for m in got] == [
        "Startup", "Authentication", "ParameterStatus", "ReadyForQuery", "Query", "RowDescription",
        "DataRow", "CommandComplete", "ReadyForQuery", "Parse", "Bind", "Execute", "Sync",
        "ParseComplete", "BindComplete", "ErrorResponse", "ReadyForQuery"]
    by_type = {m["type"]: m for m in got}
    assert by_type["Startup"]["parameters"] == {"user": "alice", "database": "shop"}
    assert by_type["Query"]["query"] == "select 1"
    assert by_type["RowDescription"]["columns"] == ["one"]
    assert by_type["CommandComplete"]["tag"] == "SELECT 1"
    assert by_type["Parse"]["query"] == "select $1" and by_type["Bind"]["parameters"] == ["2026"]
    assert by_type["ErrorResponse"]["error"] == {"severity": "ERROR", "code": "42601",
                                                 "message": "syntax error"}


def test_postgres_ssl_request_and_its_one_byte_answer():
    got = messages_of(decode("postgres", [(0, struct.pack(">ii", 8, 80877103), 1), (1, b"N", 2),
                                          (0, pg_startup(), 3), (1, pg(b"R", bytes(4)), 4)]))
    assert [m["type"] for m in got] == ["SSLRequest", "SSLResponse", "Startup", "Authentication"]
    assert got[1]["accepted"] is False


HUGE_CLAIMS = {
    "http": (1, b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n"),
    "redis": (1, b"$1073741824\r\n"),
    "postgres": (1, b"D" + struct.pack(">i", 1 << 30)),
    "http2": (1, struct.pack(">I", 0x00FFFFFF)[1:] + b"\x01\x04" + struct.pack(">I", 1)),
}


@pytest.mark.parametrize("proto", sorted(HUGE_CLAIMS))
def test_a_huge_length_claim_allocates_nothing_like_it(proto):
    flow, claim = HUGE_CLAIMS[proto]
    decoder = new_decoder(proto)
    if proto in ("redis", "postgres"):
        list(decoder.feed(0, dict(REDIS + POSTGRES[:1])[0] if proto == "redis" else pg_startup(), 0))
    chunk = b"z" * 65536
    tracemalloc.start()
    try:
        out = list(decoder.feed(flow, claim, 1))
        for _ in range(128):  # 8 MiB after the claim
            out += decoder.feed(flow, chunk, 2)
        out += decoder.finish(3)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, peak
    assert any(isinstance(o, Note) or (isinstance(o, Message) and o.incomplete) for o in out), out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proto=st.sampled_from(PROTOCOLS),
       steps=st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=300),
                                st.one_of(st.none(), st.integers(0, 5000))), max_size=12),
       lost=st.booleans())
def test_garbage_gives_messages_and_notes_only(proto, steps, lost):
    decoder = new_decoder(proto)
    out = []
    for ts, (flow, data, gap) in enumerate(steps):
        out += decoder.feed(flow, data, ts)
        if gap is not None:
            out += decoder.gap(flow, gap, ts)
        if lost:
            out += decoder.gap(flow, None, ts)
    out += decoder.finish(len(steps))
    for item in out:
        assert isinstance(item, Message | Note)
        if isinstance(item, Message):
            json.dumps(item.fields)  # every field is plain JSON data


@settings(max_examples=150, deadline=None)
@given(proto=st.sampled_from(sorted(CONVERSATIONS)), data=st.data())
def test_valid_conversations_with_bytes_flipped_never_raise(proto, data):
    feeds = whole(proto)
    index = data.draw(st.integers(0, len(feeds) - 1))
    flow, payload, ts = feeds[index]
    where = data.draw(st.integers(0, len(payload) - 1))
    damaged = payload[:where] + bytes([payload[where] ^ data.draw(st.integers(1, 255))]) + payload[where + 1:]
    feeds[index] = (flow, damaged, ts)
    decode(proto, feeds)


def test_detection_needs_a_positive_sign():
    assert guess((b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n")) == "http"
    assert guess((b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"")) == "http2"
    assert guess((b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n")) == "redis"
    assert guess((pg_startup()[:64], b"")) == "postgres"
    assert guess((b"hello\n", b"I hear ya\n")) == "unknown"
    assert guess((b"\x16\x03\x01\x02\x00", b"")) == "unknown"  # TLS stays unknown
    assert guess((b"GET / HTTP/1.1\r\n", b"*1\r\n$4\r\nPING\r\n")) == "unknown"  # disagreement


# ---- conversations in captures -------------------------------------------------------------

CLIENT, SERVER = FdIdentity("tcp", "127.0.0.1:40000", "127.0.0.1:8080"), \
    FdIdentity("tcp", "127.0.0.1:8080", "127.0.0.1:40000")
REQUEST = b"GET /x HTTP/1.1\r\nHost: shop\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def io(ts, pid, fd, data, direction, comm=b"curl", count=None, ret=None):
    count = len(data) if count is None else count
    return IoEvent(BASE + ts * 1000, pid, pid, 0, comm, fd, count, data, syscall="write" if direction == "out"
                   else "read", ret=count if ret is None else ret, seq=ts, direction=direction)


def both_ends(lost: bool = False) -> list:
    records = [
        FdInfo(BASE, 100, 3, CLIENT), FdInfo(BASE, 200, 4, SERVER),
        io(10, 100, 3, REQUEST, "out"), io(20, 200, 4, REQUEST, "in", comm=b"server"),
        io(30, 200, 4, RESPONSE, "out", comm=b"server"),
    ]
    if lost:
        records.append(Lost(BASE + 35_000, 3, "ringbuf"))
    records += [io(40, 100, 3, RESPONSE, "in"),
                FdInfo(BASE + 50, 100, 1, FdIdentity("tty", path="/dev/pts/0")),
                io(50, 100, 1, b"hello", "out")]
    return records


@pytest.fixture
def capture(tmp_path):
    def make(records) -> str:
        path = tmp_path / "c.wtrace"
        path.write_bytes(build_capture(records))
        return str(path)
    return make


def invoke(*args):
    result = runner.invoke(app, list(args))
    return result


def test_both_traced_ends_are_one_conversation_and_each_message_comes_once(capture, utc):
    path = capture(both_ends())
    streams = [json.loads(line) for line in invoke("streams", "--json", path).stdout.splitlines()]
    assert len(streams) == 1 and streams[0]["proto"] == "http"
    assert [(s["pid"], s["fd"], s["out"]["bytes"], s["in"]["bytes"]) for s in streams[0]["sides"]] == [
        (100, 3, len(REQUEST), len(RESPONSE)), (200, 4, len(RESPONSE), len(REQUEST))]
    got = [json.loads(line) for line in invoke("messages", "--json", path).stdout.splitlines()]
    assert [(m["pid"], m["direction"], m.get("method"), m.get("status")) for m in got] == [
        (100, "out", "GET", None), (100, "in", None, 200)]
    assert got[1]["latency_ns"] == 30_000 and got[1]["body_len"] == 5
    every = invoke("streams", "--all", path).stdout
    assert "stream 2" in every and "tty /dev/pts/0" in every


def test_half_known_tuple_pairs_only_when_the_first_bytes_agree(capture):
    accepted = FdIdentity("tcp", "127.0.0.1:8080", None)  # accept() without a peer address
    records = [FdInfo(BASE, 100, 3, CLIENT), FdInfo(BASE, 200, 4, accepted),
               io(10, 100, 3, REQUEST, "out"), io(20, 200, 4, REQUEST, "in")]
    assert len(invoke("streams", "--json", capture(records)).stdout.splitlines()) == 1
    records[3] = io(20, 200, 4, b"GET /other HTTP/1.1\r\n\r\n", "in")
    assert len(invoke("streams", "--json", capture(records)).stdout.splitlines()) == 2
    bound_to_port_0 = FdIdentity("tcp", "127.0.0.1:0", "127.0.0.1:40000")  # bind(0) as noted
    records[1:2] = [FdInfo(BASE, 200, 4, bound_to_port_0)]
    records[3] = io(20, 200, 4, REQUEST, "in")
    assert len(invoke("streams", "--json", capture(records)).stdout.splitlines()) == 1


def test_follow_shows_turns_offsets_and_the_loss_where_it_happened(capture, utc):
    result = invoke("follow", capture(both_ends(lost=True)))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("stream 1  http  ") and "both ends traced" in lines[0]
    body = "\n".join(lines)
    assert '-> +0.000000 s  31 B  (curl 100 fd 3 write)\n  "GET /x HTTP/1.1\\r\\n"' in body
    assert "<- +0.000030 s  43 B  (curl 100 fd 3 read)" in body
    assert body.index("-- 3 events lost (ringbuf buffer full)") < body.index('"hello"')


def test_follow_raw_and_json_carry_the_bytes_of_one_direction(capture, tmp_path):
    path = capture(both_ends())
    out = tmp_path / "in.bin"
    assert invoke("follow", path, "1", "--raw", "--direction", "in", "-o", str(out)).exit_code == 0
    assert out.read_bytes() == RESPONSE
    pieces = [json.loads(line) for line in invoke("follow", path, "--json").stdout.splitlines()]
    assert [base64.b64decode(p["data_b64"]) for p in pieces] == [REQUEST, RESPONSE]
    assert invoke("follow", path, "--hex").stdout.count("|GET /x HTTP/1.1.|") == 1


def test_follow_marks_bytes_the_snaplen_cut(capture):
    records = [FdInfo(BASE, 100, 3, CLIENT),
               io(10, 100, 3, REQUEST, "out"),
               io(20, 100, 3, RESPONSE[:40], "in", count=4096, ret=len(RESPONSE))]
    path = capture(records)
    assert "-- 3 B of this read not captured (snaplen) --" in invoke("follow", path).stdout
    got = [json.loads(line) for line in invoke("messages", "--json", path).stdout.splitlines()]
    assert got[1]["body_len"] == 5 and got[1]["incomplete"] is False


def test_follow_without_a_stream_number_lists_the_choices(capture):
    records = [FdInfo(BASE, 100, 3, CLIENT), FdInfo(BASE, 300, 5, FdIdentity("udp")),
               io(10, 100, 3, REQUEST, "out"), io(20, 300, 5, b"dns?", "out", comm=b"\x1b]0;x")]
    result = invoke("follow", capture(records))
    assert result.exit_code == 2 and "stream 2: unknown \\x1b]0;x 300 fd 5" in result.output
    assert "\x1b" not in result.output
    assert invoke("follow", capture(records), "9").exit_code == 2


def test_unknown_conversations_are_listed_as_such_and_can_be_forced(capture, utc):
    records = [FdInfo(BASE, 100, 3, CLIENT), io(10, 100, 3, b"hello\n", "out"),
               io(20, 100, 3, b"HTTP/1.1 204 No Content\r\n\r\n", "in")]
    path = capture(records)
    text = invoke("messages", path).stdout
    assert "?? stream 1: unknown protocol (tcp 127.0.0.1:40000 -> 127.0.0.1:8080)" in text
    got = [json.loads(line) for line in invoke("messages", "--json", path).stdout.splitlines()]
    assert got == [{"proto": "unknown", "direction": "out", "pid": 100, "fd": 3, "ts_ns": BASE + 10_000,
                    "stream": 1, "comm": "curl", "note": "no decoder recognises this conversation"}]
    forced = [json.loads(line) for line in
              invoke("messages", "--json", "--proto", "http", path).stdout.splitlines()]
    assert [m.get("note", m.get("status")) for m in forced] == [204, "6 bytes that start no HTTP message"]


def test_the_human_line_is_escaped_and_coloured_only_when_asked(capture, utc):
    records = [FdInfo(BASE, 100, 3, CLIENT),
               io(10, 100, 3, b"GET /\x1b[31mred\xff HTTP/1.1\r\n\r\n", "out", comm=b"cu\x1brl"),
               io(2010, 100, 3, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "in", comm=b"cu\x1brl")]
    path = capture(records)
    plain = invoke("messages", path).stdout
    assert "\x1b" not in plain
    assert plain.splitlines() == [
        "22:13:20.000 cu\\x1brl 100 fd 3 -> GET /\\x1b[31mred\\xff HTTP/1.1",
        "22:13:20.002 cu\\x1brl 100 fd 3 <- 200 OK (2.0 ms, 0 B)"]
    coloured = invoke("messages", "--color", "always", path).stdout
    assert "\x1b[32m-> GET" in coloured and "\x1b[36m<- 200" in coloured


def test_a_descriptor_the_recorder_could_not_name_is_listed_when_it_speaks_a_protocol(capture):
    records = [FdInfo(BASE, 100, 4, FdIdentity("unknown")), FdInfo(BASE, 100, 6, FdIdentity("unknown")),
               FdInfo(BASE, 100, 5, FdIdentity("file", path="/x")),
               io(10, 100, 4, REQUEST, "out"), io(20, 100, 5, b"a file", "out"),
               io(30, 100, 6, b"stdio the recorder missed", "out")]
    path = capture(records)
    result = invoke("streams", "--json", path)
    listed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [side["fd"] for conversation in listed for side in conversation["sides"]] == [4]
    assert "not listed: 1 descriptor the recorder could not name" in result.output
    assert len(invoke("streams", "--json", "--all", path).stdout.splitlines()) == 3


def test_a_capture_cut_short_gives_messages_or_a_clean_error(tmp_path):
    data = build_capture(both_ends(lost=True))
    path = tmp_path / "cut.wtrace"
    for cut in [*range(0, len(data), 13), len(data) - 1]:  # every region: preamble, frame, index
        path.write_bytes(data[:cut])
        for command in ("messages", "streams", "follow"):
            result = invoke(command, str(path), *(["1"] if command == "follow" else []))
            assert result.exit_code in (0, 2, 10), (cut, command, result.output)
            assert "internal error" not in result.output and "Traceback" not in result.output


def test_a_message_open_when_the_capture_ends_is_incomplete(capture, utc):
    records = [FdInfo(BASE, 100, 3, CLIENT), io(10, 100, 3, REQUEST, "out"),
               io(20, 100, 3, RESPONSE[:-2], "in")]
    path = capture(records)
    assert invoke("messages", path).stdout.splitlines()[-1].endswith("<- 200 OK (10.0 us, 3 B) [incomplete]")


def test_a_loss_while_a_message_is_open_marks_it_incomplete_and_no_other(capture):
    records = [FdInfo(BASE, 100, 3, CLIENT), io(10, 100, 3, REQUEST, "out"),
               io(20, 100, 3, RESPONSE[:30], "in"), Lost(BASE + 25_000, 2, "ringbuf"),
               io(30, 100, 3, RESPONSE[30:], "in"), io(40, 100, 3, REQUEST, "out"),
               io(50, 100, 3, RESPONSE, "in")]
    got = [json.loads(line) for line in invoke("messages", "--json", capture(records)).stdout.splitlines()]
    assert [(m.get("method"), m.get("status"), m["incomplete"]) for m in got] == [
        ("GET", None, False), (None, 200, True), ("GET", None, False), (None, 200, False)]


# ---- QA defects (notes/qa-note.md): each test failed before its fix -----------------------

def fed_in_events(proto: str, conversation: list[tuple[int, bytes]], size: int = 65536,
                  most: int = 1000) -> list:
    """A conversation fed as a recorder hands it over: one event per `size` bytes, 1 us apart.

    At most `most` outputs per call are taken, so a decoder that loops or
    floods fails the test on its count instead of hanging it.
    """
    decoder = new_decoder(proto)
    out: list = []
    ts = 0
    for flow, data in conversation:
        for start in range(0, len(data), size):
            ts += 1000
            out += itertools.islice(decoder.feed(flow, data[start:start + size], ts), most)
    out += itertools.islice(decoder.finish(ts + 1000), most)
    return out


def one_connection(path, pieces, port=8080) -> str:
    """A capture of pid 100 fd 3 talking to 127.0.0.1:`port`, in 64 KiB events."""
    records = [FdInfo(BASE, 100, 3, FdIdentity("tcp", "127.0.0.1:40000", f"127.0.0.1:{port}"))]
    ts = 1
    for direction, data in pieces:
        for start in range(0, len(data), 65536):
            records.append(io(ts, 100, 3, data[start:start + 65536], direction, comm=b"client"))
            ts += 1
    path.write_bytes(build_capture(records))
    return str(path)


def run_wtrec(*args: str) -> subprocess.CompletedProcess:
    """The real command in a child, so a hang fails on the timeout instead of hanging the suite."""
    return subprocess.run([sys.executable, "-m", "wtrec", *args], capture_output=True, timeout=120)


@pytest.mark.parametrize("head", [b"X-a: b\r\n" * 20000, b"X: " + b"B" * 300_000 + b"\r\n"],
                         ids=["many-lines", "one-long-line"])
def test_a_header_section_over_the_limit_is_one_note_and_decoding_goes_on(head, tmp_path):
    conversation = [(0, b"GET /big HTTP/1.1\r\n" + head + b"\r\nGET /next HTTP/1.1\r\n\r\n"),
                    (1, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")]
    out = [as_tuple(o) for o in fed_in_events("http", conversation)]
    got = [(o[0], json.loads(o[3]).get("target", json.loads(o[3]).get("status")), o[4]) if o[0] == "message"
           else o for o in out]
    assert got == [("message", "/big", True),
                   ("note", 0, "the rest of a header section over 65536 bytes; "
                               f"skipped {len(head) + 2} bytes"),
                   ("message", "/next", False), ("message", 200, False), ("message", 204, False)]
    latencies = [json.loads(o[3])["latency_ns"] for o in out if o[0] == "message" and "status" in o[3]]
    assert latencies[0] > latencies[1] > 0  # 200 answers /big, 204 answers /next
    path = one_connection(tmp_path / "h.wtrace", [("out", conversation[0][1])])
    result = run_wtrec("messages", path)
    assert result.returncode == 0 and result.stdout.count(b"\n") == 3, result.stdout[:500]


def redis_array(items: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(i), i) for i in items)


def test_a_redis_reply_over_the_limit_is_one_counted_reply_and_pairing_holds():
    items = [b"item%d" % i for i in range(20000)]
    big = redis_array(items)
    out = fed_in_events("redis", [(0, redis_array([b"LRANGE", b"big", b"0", b"-1"])), (1, big),
                                  (0, redis_array([b"PING"])), (1, b"+PONG\r\n")])
    assert [type(o).__name__ for o in out] == ["Message"] * 4, out[:6]
    reply = out[1].fields
    assert (reply["type"], reply["items"], reply["items_read"], reply["bytes"], reply["kept"]) == \
        ("array", 20000, 20000, len(big), False)
    assert reply["first_items"] == ["item0", "item1", "item2", "item3", "item4", "item5", "item6", "item7"]
    assert reply["latency_ns"] == out[1].ts_ns - out[0].ts_ns and not out[1].incomplete
    assert out[1].summary.startswith(f'array of 20000 items, {len(big)} B, not kept: ["item0", "item1"')
    assert out[3].fields == {"reply": "PONG", "latency_ns": out[3].ts_ns - out[2].ts_ns}


def test_a_redis_array_claiming_more_items_than_come_is_one_incomplete_reply():
    claim = b"*2147483647\r\n" + b":1\r\n" * 200_000
    out = fed_in_events("redis", [(0, redis_array([b"KEYS", b"*"])), (1, claim)])
    assert len(out) == 2 and out[1].incomplete
    assert (out[1].fields["items"], out[1].fields["items_read"]) == (2147483647, 200_000)
    assert out[1].summary.startswith("array of 2147483647 items (200000 read), 800013 B, not kept")


def test_a_redis_value_over_the_limit_keeps_its_command_words_and_counts_what_the_snaplen_cut():
    decoder = new_decoder("redis")
    command = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n" + b"v" * 100_000 + b"\r\n"
    out = list(decoder.feed(0, command[:4096], 1)) + list(decoder.gap(0, len(command) - 4096, 1))
    out += list(decoder.feed(1, b"+OK\r\n", 2)) + list(decoder.finish(3))
    assert [o.fields.get("command", o.fields.get("reply")) for o in out] == [["SET", "k"], "OK"]
    assert out[0].fields["captured"] is False and not out[0].incomplete
    assert out[0].fields["bytes"] == len(command)
    assert out[0].summary == f"SET k ... (array of 3 items, {len(command)} B, not kept)"


@pytest.mark.parametrize("flow", [0, 1])
def test_deeply_nested_resp_gives_one_note_per_resynchronisation(flow):
    nested = b"*1\r\n" * 200_000 + b":1\r\n"
    ping = redis_array([b"PING"])
    out = fed_in_events("redis", [(0, ping), (flow, nested), (0, ping), (1, b"+PONG\r\n")])
    notes = [o for o in out if isinstance(o, Note)]
    assert len(notes) == 1 and "nested deeper than 32" in notes[0].text, notes[:3]
    assert len(out) <= 6 and out[-1].fields["reply"] == "PONG"
    if flow == 1:  # what is left of the nesting answered the first PING; the second pairs right
        assert out[-1].fields["latency_ns"] == out[-1].ts_ns - out[-2].ts_ns


def test_messages_escapes_backslashes_and_json_gives_the_exact_bytes_back(tmp_path, utc):
    command = [b"SET", b"\x9b", b"\\x9b", b"caf\xc3\xa9"]
    pieces = [("out", redis_array(command)), ("in", b"+OK\r\n")]
    path = one_connection(tmp_path / "amb.wtrace", pieces, port=6379)
    human = invoke("messages", path).stdout.splitlines()
    assert human[0].endswith("-> SET \\x9b \\\\x9b caf\\xc3\\xa9"), human
    got = [json.loads(line) for line in invoke("messages", "--json", path).stdout.splitlines()]
    assert got[0]["command"][3] == "café"  # valid UTF-8 stays text
    assert [word.encode("utf-8", "surrogateescape") for word in got[0]["command"]] == command


def test_a_shortened_redis_reply_ends_with_an_ascii_mark_after_its_closing_quote():
    out = fed_in_events("redis", [(0, redis_array([b"HELLO"])), (1, redis_array([b"version", b"v" * 40]))])
    assert out[1].summary.startswith('["version", "vvvvvvvvvvvvvvv"...]'), out[1].summary
    assert "…" not in out[1].summary


def test_messages_with_a_stream_number_that_is_not_there_is_a_usage_error(capture):
    result = invoke("messages", "--stream", "9", capture(both_ends()))
    assert result.exit_code == 2 and "no stream 9" in result.output
    assert invoke("messages", "--stream", "1", capture(both_ends())).exit_code == 0


def failed_read_first(server_port: int, client_port: int) -> list:
    """Both ends traced; the server's first call is a read that failed (EAGAIN)."""
    client = FdIdentity("tcp", f"127.0.0.1:{client_port}", f"127.0.0.1:{server_port}")
    server = FdIdentity("tcp", f"127.0.0.1:{server_port}", f"127.0.0.1:{client_port}")
    return [FdInfo(BASE, 200, 4, server), FdInfo(BASE, 100, 3, client),
            io(5, 200, 4, b"", "in", comm=b"srv", count=100, ret=-11),
            io(10, 100, 3, REQUEST, "out", comm=b"cli"), io(20, 200, 4, REQUEST, "in", comm=b"srv"),
            io(30, 200, 4, RESPONSE, "out", comm=b"srv"), io(40, 100, 3, RESPONSE, "in", comm=b"cli")]


@pytest.mark.parametrize("ports", [(8080, 40000), (5000, 6000)], ids=["ephemeral-port", "first-send"])
def test_with_both_ends_traced_the_side_that_connected_leads_whatever_failed_first(capture, ports):
    path = capture(failed_read_first(*ports))
    got = [json.loads(line) for line in invoke("messages", "--json", path).stdout.splitlines()]
    assert [(m["pid"], m["direction"], m.get("method"), m.get("status")) for m in got] == [
        (100, "out", "GET", None), (100, "in", None, 200)]
    turns = [line for line in invoke("follow", path).stdout.splitlines() if line.startswith(("->", "<-"))]
    assert [turn.split("(")[1] for turn in turns] == ["cli 100 fd 3 write)", "cli 100 fd 3 read)"]


def test_with_both_ends_traced_the_listening_address_shows_the_client():
    server = FdIdentity("tcp", "127.0.0.1:40000", "127.0.0.1:50001")  # a server on a high port
    sides = [Side(200, 4, b"srv", server, BASE, BASE, first_ok_ns=BASE, first_ok_direction="out"),
             Side(201, 5, b"srv", FdIdentity("tcp", "127.0.0.1:40000", "127.0.0.1:50002"), BASE, BASE),
             Side(100, 3, b"cli", FdIdentity("tcp", "127.0.0.1:50001", "127.0.0.1:40000"), BASE + 1,
                  BASE + 1, first_ok_ns=BASE + 1, first_ok_direction="in")]
    paired = [c for c in pair_sides(sides) if len(c.sides) == 2]
    assert [side.pid for side in paired[0].sides] == [100, 200]


def test_notes_at_the_end_carry_their_own_streams_time(capture):
    other = FdIdentity("tcp", "127.0.0.1:40001", "127.0.0.1:8080")
    records = [FdInfo(BASE, 100, 3, CLIENT), FdInfo(BASE, 100, 4, other),
               io(10, 100, 3, b"junk junk", "out"), io(10_000_000, 100, 4, b"more junk", "out")]
    got = [json.loads(line) for line in
           invoke("messages", "--json", "--proto", "http", capture(records)).stdout.splitlines()]
    assert [(m["fd"], m["ts_ns"]) for m in got] == [(3, BASE + 10_000), (4, BASE + 10_000_000_000)]


def test_postgres_counts_the_body_does_not_hold_are_noted():
    rows = pg(b"T", b"\xff\xffone\0" + bytes(18)) + pg(b"D", b"\xff\xff") + pg(b"D", b"\0\2\0\0\0\0011")
    out = decode("postgres", [(0, pg_startup(), 1), (0, pg(b"Q", b"select 1\0"), 2), (1, rows, 3)])
    assert [o[2] for o in out if o[0] == "note"] == [
        "malformed RowDescription message (28 bytes): 65535 fields claimed, room for 1; skipped",
        "malformed DataRow message (6 bytes): 65535 values claimed, room for 0; skipped",
        "malformed DataRow message (11 bytes): 2 values claimed, room for 1; skipped"]


def test_http2_notes_hold_no_python_reprs_and_read_well():
    hpack_overflow = b"\x3f" + b"\xff" * 200 + b"\x01"  # an HPACK integer that never ends
    headers = struct.pack(">I", len(hpack_overflow))[1:] + b"\x01\x05" + struct.pack(">I", 1) + hpack_overflow
    notes = [o[2] for o in decode("http2", [(0, PREFACE + headers, 1)]) if o[0] == "note"]
    assert notes == ["HTTP/2 decoding of this direction stops: HPACK could not decode a header block "
                     "(Variable integer representation is too long)"]
    altsvc = struct.pack(">I", 70_000)[1:] + b"\x0a\x00" + bytes(4)
    notes = [o[2] for o in decode("http2", [(0, PREFACE + altsvc, 1)]) if o[0] == "note"]
    assert notes == ["HTTP/2 decoding of this direction stops: an ALTSVC frame of 70000 bytes, more than "
                     "the 65536 a decoder holds"]


@pytest.mark.parametrize("size", [997, 4096, 65536, 1 << 20])
def test_a_walked_redis_value_is_the_same_however_the_writes_split_it(size):
    items = [b"item%d" % i for i in range(3000)] + [b"x" * 70_000] + [b"tail"]
    conversation = [(0, redis_array([b"LRANGE", b"big", b"0", b"-1"])), (1, redis_array(items)),
                    (0, redis_array([b"PING"])), (1, b"+PONG\r\n")]
    out = fed_in_events("redis", conversation, size=size)
    assert [o.fields.get("command") or o.fields.get("reply") for o in out] == [
        ["LRANGE", "big", "0", "-1"], None, ["PING"], "PONG"]
    assert (out[1].fields["items"], out[1].fields["items_read"], out[1].fields["bytes"]) == (
        3002, 3002, len(redis_array(items)))
    assert out[1].fields["first_items"] == [f"item{i}" for i in range(8)]
    assert not any(o.incomplete for o in out)
