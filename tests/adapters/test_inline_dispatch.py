"""Messages judged and handled as they are read, against a real server on 127.0.0.1.

A raw TCP client controls exactly how frames are cut and joined, so that each
test drives a path of the inline reader: whole frames, frames split anywhere,
several frames in one read, fragments with a ping in between, frames the fast
path must leave to ``websockets`` (unmasked, RSV bits). Handlers that suspend
keep their order, their task and their context. Each test ends with a
legitimate client served.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import uvloop

from tests.conftest import LiveServer, assert_served, make_config, make_token
from wsguard.adapters.connection import BACKLOG_HIGH, READ_CHUNK, GuardedConnection
from wsguard.adapters.websockets import Context, GuardedService, serve
from wsguard.config import GuardConfig, ServerConfig
from wsguard.core.anomaly import AnomalyConfig
from wsguard.core.decisions import Message
from wsguard.core.guard import Guard
from wsguard.core.ratelimit import RateLimitConfig

REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="-")


class Text(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str


def _frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, (0x80 if mask else 0) | n))
    else:
        head = bytes((first, (0x80 if mask else 0) | 126)) + n.to_bytes(2, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Raw:
    """A WebSocket client over a plain TCP stream: frames go out exactly as given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.csrf = ""

    @classmethod
    async def open(cls, port: int, user: str = "alice") -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {make_token(user)}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        raw = cls(reader, writer)
        opcode, welcome = await raw.frame()
        assert opcode == 1 and json.loads(welcome)["type"] == "welcome"
        raw.csrf = json.loads(welcome)["payload"]["csrfToken"]
        return raw

    def message(self, kind: str, text: str, message_id: str) -> bytes:
        envelope = {"type": kind, "id": message_id, "payload": {"text": text}}
        envelope["csrfToken"] = self.csrf
        return json.dumps(envelope).encode()

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame (servers never mask, nor fragment here)."""
        head = await asyncio.wait_for(self.reader.readexactly(2), 5)
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return head[0] & 0x0F, await asyncio.wait_for(self.reader.readexactly(n), 5)

    async def reply(self) -> dict[str, Any]:
        opcode, data = await self.frame()
        assert opcode == 1, (opcode, data)
        reply: dict[str, Any] = json.loads(data)
        return reply

    async def close_code(self) -> int:
        while True:
            opcode, data = await self.frame()
            if opcode == 8:
                return int.from_bytes(data[:2], "big")

    async def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.writer.write(chunk)
            await self.writer.drain()
            await asyncio.sleep(0)

    def close(self) -> None:
        self.writer.close()


def _connections(service: GuardedService) -> list[GuardedConnection]:
    assert service.server is not None
    found = [c for c in service.server.connections if isinstance(c, GuardedConnection)]
    return found


@pytest.fixture
async def app(guard_factory: Callable[..., Guard]) -> AsyncIterator[tuple[GuardedService, Guard]]:
    async with _app(guard_factory) as running:
        yield running


@asynccontextmanager
async def _app(guard_factory: Callable[..., Guard]) -> AsyncIterator[tuple[GuardedService, Guard]]:
    """The demo plus ``echo`` (replies at once) and handlers that suspend."""
    limits = RateLimitConfig(
        message_burst=10**6,
        message_rate=10**6,
        user_burst=10**6,
        user_rate=10**6,
        handshake_attempts=1000,  # many clients from 127.0.0.1 in one test
    )
    base = make_config()
    guard = guard_factory(
        GuardConfig(
            jwt=base.jwt,
            origins=base.origins,
            rate_limits=limits,
            anomaly=AnomalyConfig(stuffing_subjects=1000),  # and many users
        )
    )
    gate = asyncio.Event()
    gate.set()
    guard.state = {"gate": gate}  # type: ignore[attr-defined]

    @guard.message("echo", schema=Text, roles={"user"})
    async def echo(ctx: Context, message: Message) -> None:
        await ctx.reply(message, "echo", {"text": message.payload.text})

    @guard.message("slow", schema=Text, roles={"user"})
    async def slow(ctx: Context, message: Message) -> None:
        await asyncio.sleep(0.05)
        await ctx.reply(message, "slow", {"text": message.payload.text})

    @guard.message("gated", schema=Text, roles={"user"})
    async def gated(ctx: Context, message: Message) -> None:
        await gate.wait()
        await ctx.reply(message, "gated", {"text": message.payload.text})

    @guard.message("crash_later", schema=Text, roles={"user"})
    async def crash_later(ctx: Context, message: Message) -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("secret detail after an await")

    @guard.message("bye", schema=Text, roles={"user"})
    async def bye(ctx: Context, message: Message) -> None:
        await ctx.close(4000, "bye")

    @guard.message("task_state", schema=Text, roles={"user"})
    async def task_state(ctx: Context, message: Message) -> None:
        REQUEST_VAR.set(message.payload.text)
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(0.05):
                await asyncio.sleep(10)
            outcome = "slept"
        except TimeoutError:
            outcome = "timed out"
        same_task = asyncio.current_task() is task and task is not None
        await ctx.reply(
            message,
            "task_state",
            {"outcome": outcome, "sameTask": same_task, "var": REQUEST_VAR.get()},
        )

    async with serve(guard, "127.0.0.1", 0) as service:
        yield service, guard


def _live(service: GuardedService, guard: Guard) -> LiveServer:
    return LiveServer(guard, f"ws://127.0.0.1:{service.port}/ws")


@asynccontextmanager
async def _client(app: tuple[GuardedService, Guard]) -> AsyncIterator[Raw]:
    """A raw client for the test; afterwards, a legitimate client must still be served."""
    service, guard = app
    raw = await Raw.open(service.port)
    try:
        yield raw
    finally:
        raw.close()
    await assert_served(_live(service, guard))


async def test_whole_frames_take_the_fast_path(app: tuple[GuardedService, Guard]) -> None:
    service, _ = app
    async with _client(app) as raw:
        for i in range(3):
            await raw.send(_frame(1, raw.message("echo", f"hi {i}", f"m-{i}")))
            assert await raw.reply() == {
                "type": "echo",
                "id": f"m-{i}",
                "payload": {"text": f"hi {i}"},
            }
        [connection] = _connections(service)
        assert connection.fast_frames == 3


async def test_frames_cut_anywhere_and_joined_keep_their_order(
    app: tuple[GuardedService, Guard],
) -> None:
    """Byte by byte, a frame and a half per read, three frames in one read."""
    async with _client(app) as raw:
        frames = [_frame(1, raw.message("echo", f"t{i}", f"m-{i}")) for i in range(9)]
        await raw.send(*(bytes((b,)) for b in frames[0]))  # byte by byte
        stream = frames[1] + frames[2] + frames[3]
        cut = len(frames[1]) + len(frames[2]) // 2
        await raw.send(stream[:cut], stream[cut:])  # a frame and a half, then the rest
        await raw.send(frames[4] + frames[5] + frames[6])  # three in one read
        await raw.send(frames[7] + frames[8][:1], frames[8][1:2], frames[8][2:])  # mid-header cuts
        replies = [await raw.reply() for _ in range(9)]
        assert [r["id"] for r in replies] == [f"m-{i}" for i in range(9)]
        assert [r["payload"]["text"] for r in replies] == [f"t{i}" for i in range(9)]


async def test_fragments_with_a_ping_between_make_one_message(
    app: tuple[GuardedService, Guard],
) -> None:
    async with _client(app) as raw:
        body = raw.message("echo", "in two parts", "m-f")
        await raw.send(
            _frame(1, body[:10], fin=False) + _frame(9, b"are you there") + _frame(0, body[10:])
        )
        assert await raw.frame() == (10, b"are you there")  # the pong first
        assert (await raw.reply())["payload"] == {"text": "in two parts"}


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param([_frame(1, b'{"type": "\xff\xfe"}')], 1007, id="invalid-utf8"),
        pytest.param(
            [_frame(1, b'{"type": "\xf0\x9f', fin=False), _frame(0, b'"}')], 1007, id="split-utf8"
        ),
        pytest.param([_frame(1, b'{"type": "echo"}', mask=False)], 1002, id="unmasked"),
        pytest.param([bytes((0xC1,)) + _frame(1, b"{}")[1:]], 1002, id="rsv1-without-extension"),
        pytest.param([_frame(0, b"{}")], 1002, id="stray-continuation"),
        pytest.param([_frame(1, b"{", fin=False), _frame(1, b"}")], 1002, id="text-in-fragments"),
    ],
)
async def test_bad_frames_close_as_websockets_would(
    app: tuple[GuardedService, Guard], frames: list[bytes], code: int
) -> None:
    async with _client(app) as raw:
        await raw.send(b"".join(frames))
        assert await raw.close_code() == code


async def test_a_suspended_handler_keeps_the_order(app: tuple[GuardedService, Guard]) -> None:
    """Messages read while a handler awaits wait behind it, then run in order."""
    async with _client(app) as raw:
        await raw.send(
            _frame(1, raw.message("slow", "first", "m-1"))
            + _frame(1, raw.message("echo", "second", "m-2"))
            + _frame(1, raw.message("slow", "third", "m-3"))
            + _frame(1, raw.message("echo", "fourth", "m-4"))
        )
        replies = [await raw.reply() for _ in range(4)]
        assert [r["id"] for r in replies] == ["m-1", "m-2", "m-3", "m-4"]


async def test_handlers_keep_their_task_timeout_and_context(
    app: tuple[GuardedService, Guard],
) -> None:
    """asyncio.timeout() cancels the handler's own task; a context variable survives awaits."""
    async with _client(app) as raw:
        await raw.send(_frame(1, raw.message("task_state", "req-1", "m-1")))
        reply = await raw.reply()
        assert reply["payload"] == {"outcome": "timed out", "sameTask": True, "var": "req-1"}
        await raw.send(_frame(1, raw.message("echo", "after", "m-2")))  # the connection goes on
        assert (await raw.reply())["id"] == "m-2"


async def test_a_blocked_handler_stops_reading_and_loses_nothing(
    app: tuple[GuardedService, Guard],
) -> None:
    """A flood behind a handler that waits: reading pauses, what was read stays
    bounded (the backlog's mark plus one read), and once the handler goes on,
    every message is answered in order."""
    service, guard = app
    gate: asyncio.Event = guard.state["gate"]  # type: ignore[attr-defined]
    gate.clear()
    raw = await Raw.open(service.port)
    count = 3000  # about 330 KB: more than the kernel buffers and one read hold
    frames = [_frame(1, raw.message("gated", f"n{i}", f"m-{i}")) for i in range(count)]
    raw.writer.write(b"".join(frames))  # no drain: the server may stop reading
    [connection] = _connections(service)
    for _ in range(200):
        if connection._reading_paused:  # noqa: SLF001
            break
        await asyncio.sleep(0.01)
    assert connection._reading_paused  # noqa: SLF001
    await asyncio.sleep(0.1)  # would it read on?
    held = connection._backlog  # noqa: SLF001
    assert len(held) < count
    assert sum(len(m) for m in held) <= READ_CHUNK + BACKLOG_HIGH * len(frames[0])
    gate.set()
    replies = [await raw.reply() for _ in range(count)]
    assert [r["id"] for r in replies] == [f"m-{i}" for i in range(count)]
    raw.close()
    await assert_served(_live(service, guard))


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(_frame(1, b'{"type": "\xff"}'), id="invalid-utf8"),
        pytest.param(_frame(9, b"") * 8, id="ping-flood"),  # 5 pings per 10 s
    ],
)
async def test_a_failed_client_that_never_closes_is_cut_off(
    guard_factory: Callable[..., Guard], attack: bytes
) -> None:
    """The server fails the connection, the client neither answers nor closes its
    socket: the server drops it after close_timeout rather than keep it forever."""
    base = make_config()
    config = GuardConfig(
        jwt=base.jwt,
        origins=base.origins,
        server=ServerConfig(close_timeout=0.3),
    )
    guard = guard_factory(config)
    async with serve(guard, "127.0.0.1", 0) as service:
        raw = await Raw.open(service.port)
        await raw.send(attack)
        assert await raw.close_code() in (1007, 4429)
        for _ in range(100):  # the client keeps its socket open and silent
            if guard.sessions.count() == 0:
                break
            await asyncio.sleep(0.02)
        assert guard.sessions.count() == 0
        assert not _connections(service)
        raw.close()
        guard.unban("ip", "127.0.0.1")  # a ping flood bans the IP, as it should
        await assert_served(_live(service, guard))


def test_on_uvloop_handlers_keep_order_task_and_context(
    guard_factory: Callable[..., Guard],
) -> None:
    """The same guarantees on uvloop, whose transports call data_received themselves."""

    async def scenario() -> None:
        async with _app(guard_factory) as running:
            await test_a_suspended_handler_keeps_the_order(running)
            await test_handlers_keep_their_task_timeout_and_context(running)
            await test_frames_cut_anywhere_and_joined_keep_their_order(running)
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


async def test_a_message_delivered_from_inside_a_task_goes_to_the_handler_task(
    app: tuple[GuardedService, Guard],
) -> None:
    """data_received is never called from a task by asyncio's transports; if some
    transport did, the message must still be handled (by the connection's task)."""
    service, _ = app
    async with _client(app) as raw:
        [connection] = _connections(service)
        assert asyncio.current_task() is not None
        connection._message(raw.message("echo", "from a task", "m-t").decode())  # noqa: SLF001
        assert (await raw.reply())["id"] == "m-t"
        await raw.send(_frame(1, raw.message("echo", "then inline", "m-i")))
        assert (await raw.reply())["id"] == "m-i"


async def test_a_handler_failing_after_an_await_answers_internal_error(
    app: tuple[GuardedService, Guard], caplog: pytest.LogCaptureFixture
) -> None:
    """The failure is reported as inline ones are, and the connection goes on."""
    async with _client(app) as raw:
        await raw.send(
            _frame(1, raw.message("crash_later", "x", "m-1"))
            + _frame(1, raw.message("echo", "next", "m-2"))
        )
        error = await raw.reply()
        assert error["type"] == "error" and error["id"] == "m-1"
        assert error["payload"]["code"] == "INTERNAL_ERROR"
        assert "secret detail" not in json.dumps(error)
        assert "secret detail after an await" in caplog.text  # the traceback stays here
        assert (await raw.reply())["id"] == "m-2"


async def test_a_handler_closing_its_connection_drops_what_follows(
    app: tuple[GuardedService, Guard],
) -> None:
    service, guard = app
    async with _client(app) as raw:
        await raw.send(
            _frame(1, raw.message("bye", "x", "m-1"))
            + _frame(1, raw.message("echo", "too late", "m-2"))
        )
        opcode, data = await raw.frame()  # the close, not an echo of m-2
        assert opcode == 8 and int.from_bytes(data[:2], "big") == 4000
        await raw.send(_frame(8, data[:2]))  # the client's half of the closing handshake
        assert await raw.reader.read() == b""  # the server's end of the socket
        raw.close()  # and this one: the connection is gone
        for _ in range(100):
            if guard.sessions.count() == 0:
                break
            await asyncio.sleep(0.02)
        assert guard.sessions.count() == 0


async def test_with_compression_messages_go_through_websockets_and_are_answered(
    guard_factory: Callable[..., Guard],
) -> None:
    """permessage-deflate negotiated: the fast path stands aside (compressed frames
    carry RSV1); websockets inflates, wsguard judges, the replies are compressed."""
    base = make_config()
    config = GuardConfig(jwt=base.jwt, origins=base.origins, server=ServerConfig(compression=True))
    guard = guard_factory(config)
    async with serve(guard, "127.0.0.1", 0) as service:
        live = _live(service, guard)
        async with live.connect(make_token(), compression="deflate") as ws:
            assert ws.protocol.extensions  # negotiated
            csrf = json.loads(await ws.recv())["payload"]["csrfToken"]
            for i in range(3):
                await ws.send(
                    json.dumps(
                        {"type": "chat", "id": f"z-{i}", "payload": {"text": "hi " * 50}}
                        | {"csrfToken": csrf}
                    )
                )
                reply = json.loads(await ws.recv())
                assert reply["id"] == f"z-{i}" and reply["payload"]["text"] == ("hi " * 50)
            [connection] = _connections(service)
            assert connection.fast_frames == 0
        await assert_served(live)


async def test_many_clients_mixing_quick_slow_and_failing_handlers_keep_order(
    app: tuple[GuardedService, Guard], caplog: pytest.LogCaptureFixture
) -> None:
    """10 clients, 40 messages each, random types and random cuts of the byte
    stream: every client gets one answer per message, in its own order."""
    import random

    service, guard = app
    rng = random.Random(6)

    async def client(number: int) -> None:
        raw = await Raw.open(service.port, user=f"u{number}")
        kinds = [rng.choice(("echo", "echo", "slow", "crash_later")) for _ in range(40)]
        stream = b"".join(
            _frame(1, raw.message(kind, f"{number}-{i}", f"m-{i}")) for i, kind in enumerate(kinds)
        )
        cuts = sorted(rng.sample(range(1, len(stream)), 25))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        sender = asyncio.ensure_future(raw.send(*chunks))
        replies = [await raw.reply() for _ in kinds]
        await sender
        assert [r["id"] for r in replies] == [f"m-{i}" for i in range(40)]
        for reply, kind in zip(replies, kinds, strict=True):
            assert reply["type"] == ("error" if kind == "crash_later" else kind)
        raw.close()

    async with asyncio.timeout(30):
        await asyncio.gather(*(client(n) for n in range(10)))
    assert "message dispatch failed" not in caplog.text
    await assert_served(_live(service, guard))
