"""The fast frame path agrees with ``websockets`` on every frame it takes.

``read_text_frame`` may decline any frame (``websockets`` then parses it), but
whatever it accepts must be exactly what ``websockets`` would have parsed: a
complete FIN text frame, masked, within the size limit, with the same payload.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from wsguard.adapters.fastpath import (
    SUPPORTED,
    Resumed,
    at_frame_boundary,
    read_text_frame,
    text_frame,
)

MAX = 1024


def _raw_frame(first: int, mask: bool, length_form: int, payload: bytes, key: bytes) -> bytes:
    """A frame with any first byte and any (even non-minimal) length encoding."""
    n = len(payload)
    head = bytes((first,))
    flag = 0x80 if mask else 0
    if length_form == 7 and n < 126:
        head += bytes((flag | n,))
    elif length_form == 16 and n < 65536:
        head += bytes((flag | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((flag | 127,)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def _websockets_parse(data: bytes, max_size: int) -> tuple[Frame, int] | Exception | None:
    """What websockets makes of ``data``: a frame and the bytes it used, an error, or None."""
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=True, max_size=max_size, extensions=[])
    try:
        next(parser)
    except StopIteration as stop:
        return stop.value, len(data) - len(reader.buffer)
    except (ProtocolError, PayloadTooBig) as exc:
        return exc
    return None  # incomplete


frames = st.builds(
    _raw_frame,
    first=st.one_of(st.just(0x81), st.integers(0, 255)),
    mask=st.booleans(),
    length_form=st.sampled_from([7, 16, 64]),
    payload=st.binary(max_size=300),
    key=st.binary(min_size=4, max_size=4),
)


@given(
    frame=frames,
    cut=st.one_of(st.just(0), st.integers(1, 400)),
    tail=st.binary(max_size=8),
    limit=st.integers(0, 400),
)
@settings(max_examples=500, deadline=None)
def test_accepted_frames_are_what_websockets_parses(
    frame: bytes, cut: int, tail: bytes, limit: int
) -> None:
    data = frame[: len(frame) - cut] if cut < len(frame) else frame[:1]
    data += tail if cut == 0 else b""
    prefix = os.urandom(3)
    ours = read_text_frame(prefix + data, len(prefix), limit)
    theirs = _websockets_parse(data, limit)
    if ours is None:
        return
    payload, end = ours
    assert isinstance(theirs, tuple), theirs
    parsed, used = theirs
    assert parsed.opcode is Opcode.TEXT and parsed.fin
    assert not (parsed.rsv1 or parsed.rsv2 or parsed.rsv3)
    assert bytes(parsed.data) == payload
    assert end - len(prefix) == used


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 1000, 65535])
def test_masked_text_frames_up_to_16_bit_lengths_are_taken(size: int) -> None:
    payload = os.urandom(size)
    frame = _raw_frame(0x81, True, 7 if size < 126 else 16, payload, b"\x01\x02\x03\x04")
    assert read_text_frame(frame + b"\x89", 0, 65536) == (payload, len(frame))


@pytest.mark.parametrize(
    ("first", "mask", "form", "size", "limit"),
    [
        (0x01, True, 7, 10, MAX),  # a first fragment
        (0x80, True, 7, 10, MAX),  # a continuation
        (0x82, True, 7, 10, MAX),  # binary
        (0x89, True, 7, 10, MAX),  # ping
        (0xC1, True, 7, 10, MAX),  # RSV1 without an extension
        (0x81, False, 7, 10, MAX),  # unmasked
        (0x81, True, 64, 10, MAX),  # a 64-bit length
        (0x81, True, 16, 200, 199),  # over the limit
    ],
)
def test_other_frames_are_left_to_websockets(
    first: int, mask: bool, form: int, size: int, limit: int
) -> None:
    frame = _raw_frame(first, mask, form, b"a" * size, b"\x00\x00\x00\x00")
    assert read_text_frame(frame, 0, limit) is None


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 70000])
def test_server_text_frames_parse_in_websockets(size: int) -> None:
    payload = os.urandom(size)
    reader = StreamReader()
    reader.feed_data(text_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
    with pytest.raises(StopIteration) as stop:
        next(parser)
    frame = stop.value.value
    assert (frame.opcode, frame.fin, bytes(frame.data)) == (Opcode.TEXT, True, payload)
    assert not reader.buffer


def _open_protocol() -> ServerProtocol:
    protocol = ServerProtocol()
    protocol.receive_data(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    [request] = protocol.events_received()
    protocol.send_response(protocol.accept(request))
    assert protocol.state is OPEN
    return protocol


def test_the_installed_websockets_supports_the_fast_path() -> None:
    """If websockets changes its parser, this fails rather than the fast path going quiet."""
    assert SUPPORTED
    assert at_frame_boundary(_open_protocol())


def test_frame_boundary_follows_websockets_parser() -> None:
    protocol = _open_protocol()
    key = b"\x05\x06\x07\x08"
    frame = _raw_frame(0x81, True, 7, b"hello", key)
    protocol.receive_data(frame[:1])  # one byte: still in the buffer
    assert not at_frame_boundary(protocol)
    protocol.receive_data(frame[1:2])  # the header is consumed, the mask awaited
    assert not protocol.reader.buffer
    assert not at_frame_boundary(protocol)
    protocol.receive_data(frame[2:])
    assert at_frame_boundary(protocol)
    protocol.receive_data(_raw_frame(0x01, True, 7, b"part", key))  # a message begins
    assert not at_frame_boundary(protocol)
    protocol.receive_data(_raw_frame(0x89, True, 7, b"", key))  # a ping in between
    assert not at_frame_boundary(protocol)
    protocol.receive_data(_raw_frame(0x80, True, 7, b"end", key))
    assert at_frame_boundary(protocol)
    texts = [bytes(e.data) for e in protocol.events_received() if e.opcode is not Opcode.PING]
    assert texts == [b"hello", b"part", b"end"]


async def test_resumed_carries_on_as_a_task_would() -> None:
    log: list[Any] = []

    async def handler() -> str:
        await asyncio.sleep(0)  # yields None to the task: run again soon
        log.append("after sleep")
        await asyncio.sleep(0.01)
        return "result"

    coro = handler()
    first = coro.send(None)  # started by hand, as data_received does
    assert first is None
    result = await asyncio.get_running_loop().create_task(_await(Resumed(coro, first)))
    assert (result, log) == ("result", ["after sleep"])


async def test_resumed_passes_cancellation_into_the_coroutine() -> None:
    seen: list[str] = []

    async def handler() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    coro = handler()
    first = coro.send(None)
    task = asyncio.get_running_loop().create_task(_await(Resumed(coro, first)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def _await(awaitable: Resumed) -> Any:
    return await awaitable


def test_connection_made_still_matches_websockets() -> None:
    """GuardedConnection.connection_made repeats websockets' own (to keep the handler
    task's context); if websockets changes it, this fails instead of a silent drift."""
    import inspect

    from websockets.asyncio.server import ServerConnection

    source = inspect.getsource(ServerConnection.connection_made)
    body = [line.strip() for line in source.splitlines() if line.strip()[:1] not in ("#", "")]
    assert body[1:] == [
        "super().connection_made(transport)",
        "handler_task = self.loop.create_task(self.server.handler(self))",
        "self.server.handler_tasks.add(handler_task)",
    ]
