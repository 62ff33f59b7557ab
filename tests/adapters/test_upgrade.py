"""The upgrade: the session opens with the decision, the welcome leaves with the 101.

Against a real server on 127.0.0.1, with a raw socket so that the bytes on the
wire are what is checked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable

import pytest

from tests.conftest import LiveServer, assert_served, make_config, make_token, welcome
from wsguard.adapters.websockets import serve
from wsguard.config import GuardConfig
from wsguard.core.anomaly import AnomalyConfig
from wsguard.core.clock import SystemClock
from wsguard.core.guard import Guard
from wsguard.core.ratelimit import RateLimitConfig
from wsguard.core.registry import SessionConfig
from wsguard.reputation import Reputation, ReputationConfig


def _request(port: int, token: str, version: str = "13") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {version}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


async def _first_read(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


async def test_welcome_arrives_in_the_same_write_as_the_101(live_server: LiveServer) -> None:
    port = int(live_server.url.split(":")[2].split("/")[0])
    data = await _first_read(port, _request(port, make_token()))
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert rest[:1] == b"\x81", "the welcome frame follows the response in one read"
    length = rest[1]
    assert length == 126  # a welcome is longer than 125 bytes
    size = int.from_bytes(rest[2:4], "big")
    welcome = json.loads(rest[4 : 4 + size])
    assert welcome["type"] == "welcome" and len(welcome["payload"]["csrfToken"]) >= 32


async def test_an_upgrade_refused_by_websockets_releases_its_session(
    guard_factory: Callable[..., Guard],
) -> None:
    """A valid token on a request websockets refuses (bad version): nothing stays counted."""
    guard = guard_factory()
    async with serve(guard, "127.0.0.1", 0) as service:
        port = service.port
        for _ in range(3):
            data = await _first_read(port, _request(port, make_token(), version="8"))
            assert data.startswith(b"HTTP/1.1 400"), data[:40]
        for _ in range(50):
            if guard.sessions.count() == 0 and guard.connections.total == 0:
                break
            await asyncio.sleep(0.02)
        assert guard.sessions.count() == 0
        assert guard.connections.total == 0 and len(guard.connections) == 0
        await assert_served(LiveServer(guard, f"ws://127.0.0.1:{port}/ws"))


async def test_a_closed_connection_is_freed_without_the_garbage_collector(
    live_server: LiveServer,
) -> None:
    """No reference cycle keeps a server connection, or its transport and socket,
    alive once closed: a cycle per connection costs a collection pass per
    handshake (30 us each, measured)."""
    import gc
    import weakref

    from wsguard.adapters.connection import GuardedConnection

    server_side: list[weakref.ref[object]] = []  # the server's transports and sockets

    async def one(text: str) -> None:
        async with live_server.connect(make_token()) as ws:
            info = await welcome(ws)
            (user,) = live_server.guard.sessions.by_user("alice")
            transport = user[1].connection.transport  # type: ignore[attr-defined]
            sock = transport.get_extra_info("socket")._sock
            server_side.extend((weakref.ref(transport), weakref.ref(sock)))
            await ws.send(
                json.dumps(
                    {"type": "chat", "payload": {"text": text}, "csrfToken": info["csrfToken"]}
                )
            )
            await ws.recv()

    await one("warm-up")
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for i in range(5):
            await one(f"n{i}")
        await asyncio.sleep(0.2)  # the server side finishes closing
        left_below = [type(ref()).__name__ for ref in server_side if ref() is not None]
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, GuardedConnection)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not left, f"{len(left)} connections freed only by the garbage collector"
    assert len(server_side) == 12
    assert not left_below, f"freed only by the garbage collector: {left_below}"
    await assert_served(live_server)


@pytest.mark.parametrize("slow_provider", [False, True], ids=["no-provider", "slow-provider"])
@pytest.mark.parametrize(
    ("users", "cap"),
    [
        pytest.param([f"u{i}" for i in range(10)], "ip", id="connections-per-ip"),
        pytest.param(["same"] * 10, "user", id="sessions-per-user"),
    ],
)
async def test_concurrent_handshakes_cannot_overshoot_the_caps(
    guard_factory: Callable[..., Guard], users: list[str], cap: str, slow_provider: bool
) -> None:
    """Ten upgrade requests written before any answer is read: exactly the cap
    gets 101 and the rest are refused with 429, never opened and then closed.
    A slow reputation provider makes all ten wait at the same await first."""

    async def provider(ip: str) -> bool:
        await asyncio.sleep(0.05)
        return False

    base = make_config()
    config = GuardConfig(
        jwt=base.jwt,
        origins=base.origins,
        rate_limits=RateLimitConfig(
            max_connections_per_ip=3 if cap == "ip" else 100, handshake_attempts=100
        ),
        sessions=SessionConfig(max_sessions_per_user=2 if cap == "user" else 100),
        anomaly=AnomalyConfig(stuffing_subjects=100),
    )
    guard = guard_factory(config)
    limit = 3 if cap == "ip" else 2
    reputation = (
        Reputation(ReputationConfig(blocklist_file=None), SystemClock(), provider=provider)
        if slow_provider
        else None
    )
    async with serve(guard, "127.0.0.1", 0, reputation=reputation) as service:
        port = service.port
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in users]
        for (_, writer), user in zip(streams, users, strict=True):
            writer.write(_request(port, make_token(user)))
        heads = [await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) for reader, _ in streams]
        statuses = sorted(int(head.split()[1]) for head in heads)
        assert statuses == [101] * limit + [429] * (len(users) - limit)
        assert guard.sessions.count() == limit
        for _, writer in streams:
            writer.close()
        for _ in range(100):
            if guard.sessions.count() == 0:
                break
            await asyncio.sleep(0.02)
        assert guard.sessions.count() == 0 and guard.connections.total == 0
        await assert_served(LiveServer(guard, f"ws://127.0.0.1:{port}/ws"))
