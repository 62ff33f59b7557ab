"""The one-pass request parser: exactly websockets' request, or websockets parses.

The property: whenever :func:`parse_request` returns a request, ``websockets``
parses the same bytes into the same request (path, method, protocol, headers
in order) and stops reading at the same byte. Then the same attacks against a
live server: malformed requests get ``websockets``' own answer, and a
legitimate client is still served.
"""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets import http11
from websockets.http11 import Request
from websockets.server import ServerProtocol

from tests.conftest import LiveServer, assert_served, make_token
from wsguard.adapters.request import parse_request, take_parsed_request

TOKEN_CHARS = "-!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _websockets(data: bytes) -> tuple[ServerProtocol, list[object]]:
    protocol = ServerProtocol()
    protocol.receive_data(data)
    return protocol, protocol.events_received()


def _same_request(mine: Request, theirs: object) -> None:
    assert isinstance(theirs, Request)
    assert (mine.method, mine.path, mine.protocol) == (theirs.method, theirs.path, theirs.protocol)
    assert list(mine.headers.raw_items()) == list(theirs.headers.raw_items())
    for name in {k.lower() for k, _ in theirs.headers.raw_items()}:
        assert mine.headers.get_all(name) == theirs.headers.get_all(name)
    assert list(mine.headers) == list(theirs.headers)


def _upgrade(port: int = 8765, token: str = "t", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    ).encode("latin-1")


# Pieces of requests, mostly valid (so that the fast parser has something to
# get wrong), and now and then one of every kind of byte websockets checks for.
_valid_paths = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
_path_bytes = st.one_of(
    *[_valid_paths.map(lambda p: ("/" + p).encode())] * 5,
    st.sampled_from([b"/\x7f", b"/\x01", b"/\xe9", b"", b"/ a", b"/\t"]),
)
_request_lines = st.tuples(
    st.sampled_from([b"GET"] * 12 + [b"get", b"POST", b"GET "]),
    _path_bytes,
    st.sampled_from(
        [b"HTTP/1.1"] * 8
        + [b"HTTP/1.0"] * 2
        + [b"HTTP/2", b"HTTP/1.2", b"HTTP/1.10", b"HTTP/1.1 ", b"http/1.1"]
    ),
).map(lambda t: t[0] + b" " + t[1] + b" " + t[2])
_tokens = st.text(TOKEN_CHARS, min_size=1, max_size=20).map(str.encode)
_names = st.one_of(
    _tokens,
    _tokens,
    _tokens,
    st.sampled_from(
        [b"Host", b"Transfer-Encoding", b"Content-Length", b"content-length", b"", b"Bad Name",
         b"N\xe9", b"X\x00", b" Host", b"Host "]
    ),
)  # fmt: skip
# websockets' value characters, as latin-1: tab, space to ~, and 0x80 to 0xff.
_value_chars = st.sampled_from("\t \t ") | st.characters(min_codepoint=0x20, max_codepoint=0x7E)
_valid_values = st.text(
    _value_chars | st.characters(min_codepoint=0x80, max_codepoint=0xFF), max_size=40
).map(lambda v: v.encode("latin-1"))
_value_bytes = st.one_of(_valid_values, _valid_values, _valid_values, st.binary(max_size=20))
_separators = st.sampled_from([b":", b": ", b":\t", b": \t ", b":  ", b" :", b"", b"::"])
_eols = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r", b"\r\n "])
_valid_header = st.tuples(
    _tokens,
    st.sampled_from([b":", b": ", b":\t", b": \t ", b":  "]),
    _valid_values,
    st.just(b"\r\n"),
)
_any_header = st.tuples(_names, _separators, _value_bytes, _eols)
# One header in ten is anything at all.
_header = st.integers(0, 9).flatmap(lambda i: _valid_header if i else _any_header)
_headers = st.lists(_header, max_size=8)
_rests = st.sampled_from([b"", b"", b"\x81", b"GET", b"\r\n"])


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    data = draw(_request_lines) + draw(st.sampled_from([b"\r\n"] * 6 + [b"\n"]))
    for name, separator, value, eol in draw(_headers):
        data += name + separator + value + eol
    return data + draw(st.sampled_from([b"\r\n"] * 6 + [b"", b"\n"])) + draw(_rests)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests())
def test_a_parsed_request_is_the_one_websockets_parses(data: bytes) -> None:
    parsed = parse_request(data)
    if parsed is None:
        return  # websockets parses these bytes itself
    mine, offset = parsed
    protocol, events = _websockets(data)
    assert protocol.handshake_exc is None
    assert events, "websockets found no request where the fast parser did"
    _same_request(mine, events[0])
    # Stopped at the same byte: what websockets left unread is what follows
    # (when that is too short for its frame reader to take any of it).
    if len(data) - offset < 2:
        assert bytes(protocol.reader.buffer) == data[offset:]


@settings(max_examples=300, deadline=None)
@given(_requests())
def test_the_protocol_ends_in_the_same_state(data: bytes) -> None:
    """Through take_parsed_request and receive_data, as the connection does."""
    theirs, their_events = _websockets(data)
    mine = ServerProtocol()
    rest = take_parsed_request(mine, data)
    mine.receive_data(data if rest is None else rest)
    my_events = mine.events_received()
    assert len(my_events) == len(their_events)
    for a, b in zip(my_events, their_events, strict=True):
        if isinstance(b, Request):
            assert isinstance(a, Request)
            _same_request(a, b)
        else:
            assert repr(a) == repr(b)
    assert mine.data_to_send() == theirs.data_to_send()
    assert mine.state is theirs.state
    assert type(mine.handshake_exc) is type(theirs.handshake_exc)
    assert bytes(mine.reader.buffer) == bytes(theirs.reader.buffer)


def test_a_usual_upgrade_takes_the_fast_path() -> None:
    """Browsers' and clients' upgrades are parsed here: the speed-up is real."""
    for data in (
        _upgrade(token=make_token()),
        _upgrade(extra="Origin: https://app.example\r\nSec-WebSocket-Protocol: wsguard.v1\r\n"),
        _upgrade(extra="Cookie: a=b; wsguard_token=x\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"),
        b"GET / HTTP/1.0\r\n\r\n",
        _upgrade(extra="X-Name: caf\xe9 \t\r\n"),  # obs-text, kept as ISO-8859-1
    ):
        parsed = parse_request(data)
        assert parsed is not None, data
        _same_request(parsed[0], _websockets(data)[1][0])
        assert parsed[1] == len(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\r\n", id="incomplete"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", id="bare-lf"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", id="bare-cr"),
        pytest.param(b"GET /ws HTTP/1.1\r\nX: a\r\n b\r\n\r\n", id="obs-fold"),
        pytest.param(b"GET /ws HTTP/1.1\r\nHost : a\r\n\r\n", id="space-before-colon"),
        pytest.param(b"GET /ws HTTP/1.1\r\nX: a\x00b\r\n\r\n", id="nul-in-value"),
        pytest.param(b"GET /w\xe9 HTTP/1.1\r\n\r\n", id="non-ascii-path"),
        pytest.param(b"GET /ws HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunked"),
        pytest.param(b"GET /ws HTTP/1.1\r\nContent-Length: 0\r\n\r\n", id="content-length"),
        pytest.param(b"POST /ws HTTP/1.1\r\n\r\n", id="post"),
        pytest.param(b"GET /ws HTTP/2\r\n\r\n", id="http2"),
        pytest.param(b"GET /ws HTTP/1.2\r\n\r\n", id="http1.2"),
        pytest.param(
            b"GET /ws HTTP/1.1\r\n" + b"X: y\r\n" * (http11.MAX_NUM_HEADERS + 1) + b"\r\n",
            id="too-many-headers",
        ),
        pytest.param(
            b"GET /ws HTTP/1.1\r\nX: " + b"y" * http11.MAX_LINE_LENGTH + b"\r\n\r\n",
            id="line-too-long",
        ),
    ],
)
def test_what_websockets_must_judge_is_left_to_it(data: bytes) -> None:
    assert parse_request(data) is None
    protocol = ServerProtocol()
    assert take_parsed_request(protocol, data) is None


def test_the_header_regex_is_linear_on_adversarial_lines() -> None:
    """Spaces and tabs without end, and a value cut by a bare LF: one pass each."""
    for line in (b" \t" * 3000, b"a" * 6000 + b"\n", b"\t" * 6000 + b"\x00"):
        data = b"GET /ws HTTP/1.1\r\nX:" + line + b"\r\n\r\n"
        protocol, _ = _websockets(data)
        parsed = parse_request(data)
        assert (parsed is None) == (protocol.handshake_exc is not None)


async def _answer(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        async with asyncio.timeout(5):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        return b"".join(chunks)
    finally:
        writer.close()


def _status(answer: bytes) -> bytes:
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    ("attack", "status"),
    [
        pytest.param(b"Host: a\nX: b\r\n", b"", id="bare-lf"),
        pytest.param(b"X: a\r\n b\r\n", b"", id="obs-fold"),
        pytest.param(b"Host : a\r\n", b"", id="space-before-colon"),
        pytest.param(b"Transfer-Encoding: chunked\r\n", b"", id="chunked"),
        pytest.param(b"X: y\r\n" * (http11.MAX_NUM_HEADERS + 1), b"HTTP/1.1 431", id="headers"),
        pytest.param(b"X: " + b"y" * http11.MAX_LINE_LENGTH + b"\r\n", b"HTTP/1.1 431", id="line"),
    ],
)
async def test_malformed_upgrades_get_websockets_answer(
    live_server: LiveServer, attack: bytes, status: bytes
) -> None:
    """A valid token in a malformed request: refused as websockets refuses it."""
    port = int(live_server.url.split(":")[2].split("/")[0])
    data = _upgrade(port, make_token(), extra=attack.decode("latin-1"))
    answer = await _answer(port, data)
    assert _status(answer).startswith(status) and (status or not answer), answer[:80]
    assert b"HTTP/1.1 101" not in answer
    await assert_served(live_server)


async def test_a_request_in_pieces_is_served(live_server: LiveServer) -> None:
    """A slow client's request goes to websockets' own parser, and is served."""
    port = int(live_server.url.split(":")[2].split("/")[0])
    data = _upgrade(port, make_token())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(0, len(data), 7):
            writer.write(data[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        answer = await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 101")
    await assert_served(live_server)


async def test_a_frame_sent_with_the_request_is_read(live_server: LiveServer) -> None:
    """Bytes after the request in the same segment reach the frame reader.

    websockets answers such an early ping at once, before the 101 (its own
    order, kept: the request goes through the same protocol object).
    """
    port = int(live_server.url.split(":")[2].split("/")[0])
    ping = bytes([0x89, 0x80]) + os.urandom(4)  # a masked ping, no payload
    answer = b""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_upgrade(port, make_token()) + ping)
        async with asyncio.timeout(5):
            while b"\x8a\x00" not in answer or b"HTTP/1.1 101" not in answer:
                chunk = await reader.read(65536)
                assert chunk, answer
                answer += chunk
    finally:
        writer.close()
    await assert_served(live_server)
