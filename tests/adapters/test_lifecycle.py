"""Sessions and their lifecycle through real connections, with an injected clock.

Timers run through :meth:`GuardedServer.tick`, called by the tests after moving
the fake clock, so nothing waits on wall-clock time.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ALLOWED_ORIGIN, AUDIENCE, ISSUER, SECRET, welcome
from wsguard.adapters.websockets import GuardedService, serve
from wsguard.config import GuardConfig, JwtConfig, OriginConfig, ServerConfig
from wsguard.core.auth import issue_token
from wsguard.core.clock import FakeClock
from wsguard.core.guard import Guard
from wsguard.core.ratelimit import RateLimitConfig
from wsguard.core.registry import SessionConfig
from wsguard.demo import install_demo

ADMIN = "admin-token-0123456789abcdef0123456789"
JWT = JwtConfig(secret=SECRET, audience=AUDIENCE, issuer=ISSUER)


class Env:
    def __init__(self, service: GuardedService, clock: FakeClock) -> None:
        self.service = service
        self.guard = service.guard
        self.clock = clock
        self.url = f"ws://127.0.0.1:{service.port}/ws"
        self.http = f"http://127.0.0.1:{service.http_port}"

    def token(self, sub: str = "alice", ttl: float = 600, **kw: Any) -> str:
        return issue_token(JWT, sub, ["user"], ttl, self.clock.now(), **kw)

    def connect(self, token: str | None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return connect(self.url, additional_headers=headers, open_timeout=5, close_timeout=2, **kw)

    async def tick(self, seconds: float = 0) -> None:
        self.clock.advance(seconds)
        await self.service.guarded.tick()
        await asyncio.sleep(0.05)  # let scheduled closes and sends go out

    async def request(
        self, method: str, path: str, body: Any = None, token: str | None = ADMIN
    ) -> tuple[int, Any]:
        """An HTTP request from a thread, so that the server's loop stays free."""
        return await asyncio.to_thread(self._request, method, path, body, token)

    def _request(self, method: str, path: str, body: Any, token: str | None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        req = urllib.request.Request(self.http + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (loopback)
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.startswith(b"{") else raw
        except urllib.error.HTTPError as exc:
            with exc:  # it holds the response's socket
                return exc.code, exc.read()


def _config(**kw: Any) -> GuardConfig:
    server = kw.pop("server", ServerConfig(ping_interval=20, ping_timeout=20))
    return GuardConfig(
        jwt=JWT,
        origins=OriginConfig(allowed=(ALLOWED_ORIGIN,)),
        admin_token=ADMIN,
        server=server,
        rate_limits=RateLimitConfig(handshake_attempts=10_000),
        **kw,
    )


@pytest.fixture
def env_factory() -> Callable[..., Any]:
    @asynccontextmanager
    async def factory(
        config: GuardConfig | None = None, http_port: int | None = 0
    ) -> AsyncIterator[Env]:
        clock = FakeClock(start=time.time())
        guard = Guard(config or _config(), clock=clock)
        install_demo(guard)
        async with serve(guard, "127.0.0.1", 0, http_port=http_port) as service:
            yield Env(service, clock)

    return factory


async def _closed_code(ws: Any) -> int:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def _status(env: Env, token: str | None, **kw: Any) -> int:
    try:
        async with env.connect(token, **kw) as ws:
            await welcome(ws)
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_token_expiring_then_4401_without_refresh(env_factory: Any) -> None:
    """token_expiring comes 60 s before exp; at exp the connection closes 4401."""
    async with env_factory() as env:
        ws = await env.connect(env.token(ttl=120))
        info = await welcome(ws)
        await env.tick(59)
        await env.tick(2)  # 61 s: inside the 60 s lead
        frame = json.loads(await ws.recv())
        assert frame == {"type": "token_expiring", "payload": {"expiresAt": info["expiresAt"]}}
        await env.tick(60)
        assert await _closed_code(ws) == 4401


async def test_refresh_keeps_the_session_and_rotates_csrf(env_factory: Any) -> None:
    """A fresh token for the same sub extends the session; wrong sub or older token are refused."""
    async with env_factory() as env:
        old_token = env.token(ttl=120)
        env.clock.advance(1)
        ws = await env.connect(env.token(ttl=120))
        info = await welcome(ws)
        for bad in (env.token("mallory", ttl=600), old_token):
            await ws.send(json.dumps({"type": "token_refresh", "payload": {"token": bad}}))
            assert json.loads(await ws.recv())["payload"]["code"] == "TOKEN_INVALID"
        env.clock.advance(30)
        await ws.send(
            json.dumps(
                {"type": "token_refresh", "id": "r", "payload": {"token": env.token(ttl=3600)}}
            )
        )
        reply = json.loads(await ws.recv())
        assert reply["type"] == "token_refreshed" and reply["id"] == "r"
        assert reply["payload"]["csrfToken"] != info["csrfToken"]
        await env.tick(200)  # past the first token's expiry: still open
        await ws.send(
            json.dumps(
                {
                    "type": "chat",
                    "payload": {"text": "hi"},
                    "csrfToken": reply["payload"]["csrfToken"],
                }
            )
        )
        assert json.loads(await ws.recv())["type"] == "chat"
        await ws.close()


async def test_csrf_rotation_on_schedule_with_grace(env_factory: Any) -> None:
    """Every 15 min a csrf_rotated frame; the old token works 30 s more, never after."""
    async with env_factory() as env:
        ws = await env.connect(env.token(ttl=7200))
        old = (await welcome(ws))["csrfToken"]
        await env.tick(900)
        frame = json.loads(await ws.recv())
        assert frame["type"] == "csrf_rotated"
        new = frame["payload"]["csrfToken"]
        chat = {"type": "chat", "payload": {"text": "x"}}
        env.clock.advance(30)
        await ws.send(json.dumps({**chat, "csrfToken": old}))
        assert json.loads(await ws.recv())["type"] == "chat"
        env.clock.advance(0.01)
        await ws.send(json.dumps({**chat, "csrfToken": old}))
        assert json.loads(await ws.recv())["payload"]["code"] == "CSRF_INVALID"
        await ws.send(json.dumps({**chat, "csrfToken": new}))
        assert json.loads(await ws.recv())["type"] == "chat"
        await ws.close()


@pytest.mark.parametrize("policy", ["refuse", "evict_oldest"])
async def test_sessions_per_user_limit(env_factory: Any, policy: str) -> None:
    """At 2 sessions: refuse gives 429; evict_oldest closes the oldest with 4409."""
    config = _config(sessions=SessionConfig(max_sessions_per_user=2, on_limit=policy))
    async with env_factory(config) as env:
        first = await env.connect(env.token())
        await welcome(first)
        env.clock.advance(1)
        second = await env.connect(env.token())
        await welcome(second)
        env.clock.advance(1)
        if policy == "refuse":
            assert await _status(env, env.token()) == 429
            assert await _status(env, env.token("bob")) == 101
        else:
            third = await env.connect(env.token())
            await welcome(third)
            assert await _closed_code(first) == 4409
            assert env.guard.sessions.count() == 2
            await third.close()
        await second.close()


async def test_terminated_session_cannot_be_revived(env_factory: Any) -> None:
    """Admin DELETE closes with 4410; the old token is refused after, a new one accepted."""
    async with env_factory() as env:
        token = env.token()
        ws = await env.connect(token)
        info = await welcome(ws)
        assert (await env.request("DELETE", f"/admin/sessions/{info['sessionId']}", token=None))[
            0
        ] == 401
        status, body = await env.request("DELETE", f"/admin/sessions/{info['sessionId']}")
        assert status == 200 and body == {"terminated": 1}
        assert await _closed_code(ws) == 4410
        assert await _status(env, token) == 401
        env.clock.advance(1)
        assert await _status(env, env.token()) == 101


async def test_terminate_all_sessions_of_a_user(env_factory: Any) -> None:
    """DELETE /admin/users/{sub}/sessions closes every tab; tokens without jti are refused too."""
    async with env_factory() as env:
        tabs = [await env.connect(env.token("carol")) for _ in range(2)]
        for tab in tabs:
            await welcome(tab)
        other = await env.connect(env.token("dave"))
        await welcome(other)
        status, body = await env.request("DELETE", "/admin/users/carol/sessions")
        assert (status, body) == (200, {"terminated": 2})
        for tab in tabs:
            assert await _closed_code(tab) == 4410
        assert await _status(env, env.token("carol")) == 401  # issued in the same second
        env.clock.advance(1)
        assert await _status(env, env.token("carol")) == 101
        await other.send(json.dumps({"type": "health-check"}))
        assert json.loads(await other.recv())["type"] == "health-check"
        await other.close()


async def test_admin_api_needs_its_own_credential(env_factory: Any) -> None:
    """No or a user token: 401; the admin token lists sessions and manages bans."""
    async with env_factory() as env:
        assert (await env.request("GET", "/admin/sessions", token=None))[0] == 401
        assert (await env.request("GET", "/admin/sessions", token=env.token()))[0] == 401
        ws = await env.connect(env.token("erin"))
        await welcome(ws)
        status, body = await env.request("GET", "/admin/sessions")
        assert status == 200 and [s["user"] for s in body["sessions"]] == ["erin"]
        assert (
            await env.request("POST", "/admin/bans", {"kind": "user", "key": "erin", "seconds": 60})
        )[0] == 201
        assert await _status(env, env.token("erin")) == 403
        unban = await env.request("DELETE", "/admin/bans", {"kind": "user", "key": "erin"})
        assert unban[0] == 200
        assert await _status(env, env.token("erin")) == 101


async def test_admin_api_off_without_admin_token(env_factory: Any) -> None:
    config = GuardConfig(jwt=JWT, origins=OriginConfig(allowed=(ALLOWED_ORIGIN,)))
    async with env_factory(config) as env:
        assert (await env.request("GET", "/admin/sessions"))[0] == 404


async def test_tickets_are_single_use_and_short_lived(env_factory: Any) -> None:
    """POST /auth/ticket trades a bearer token for a ticket good for one upgrade within 30 s."""
    async with env_factory() as env:
        assert (await env.request("POST", "/auth/ticket", token=None))[0] == 401
        status, body = await env.request("POST", "/auth/ticket", token=env.token())
        assert status == 200 and body["expiresInMs"] == 30_000
        ticket = body["ticket"]
        url = f"{env.url}?ticket={ticket}"
        async with connect(url, open_timeout=5) as ws:
            await welcome(ws)
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, open_timeout=5):
                pass
        assert info.value.response.status_code == 401
        _, body = await env.request("POST", "/auth/ticket", token=env.token())
        env.clock.advance(30)
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{env.url}?ticket={body['ticket']}", open_timeout=5):
                pass
        assert info.value.response.status_code == 401


def _close_code(data: bytes) -> int:
    """The code of the close frame among unmasked server frames (a ping's payload is random)."""
    at = 0
    while at < len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        head = 2
        if length == 126:
            length, head = int.from_bytes(data[at + 2 : at + 4], "big"), 4
        if opcode == 8:
            return int.from_bytes(data[at + head : at + head + 2], "big")
        at += head + length
    raise AssertionError("no close frame")


async def test_client_that_stops_answering_pings_is_closed_4408(env_factory: Any) -> None:
    """A raw socket that upgrades then stops reading gets no pong through: 4408 and cleanup."""
    async with env_factory() as env:
        reader, writer = await asyncio.open_connection("127.0.0.1", env.service.port)
        try:
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            writer.write(
                (
                    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    f"Authorization: Bearer {env.token('silent')}\r\n\r\n"
                ).encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            await asyncio.sleep(0.1)
            assert env.guard.sessions.count() == 1
            await env.tick(20)  # a ping goes out; this client never answers
            await env.tick(20)  # no pong within ping_timeout
            async with asyncio.timeout(15):
                while env.guard.sessions.count():
                    await asyncio.sleep(0.05)
                data = await reader.read()  # everything until the server closed
            assert _close_code(data) == 4408
        finally:
            writer.close()


async def test_metrics_scrape_parses(env_factory: Any) -> None:
    """/metrics is Prometheus text that prometheus_client parses, with live numbers."""
    async with env_factory() as env:
        ws = await env.connect(env.token())
        csrf = (await welcome(ws))["csrfToken"]
        for token in (csrf, "wrong"):
            await ws.send(
                json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": token})
            )
            await ws.recv()
        assert await _status(env, None) == 401
        status, raw = await env.request("GET", "/metrics", token=None)
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(raw.decode())}
        assert families["wsguard_connections_open"].samples[0].value == 1
        refusals = {
            s.labels["reason"]: s.value
            for s in families["wsguard_handshake_refusals"].samples
            if s.name.endswith("_total")
        }
        assert refusals["auth"] == 1
        messages = {
            (s.labels["type"], s.labels["outcome"]): s.value
            for s in families["wsguard_messages"].samples
            if s.name.endswith("_total")
        }
        assert messages[("chat", "delivered")] == 1
        assert messages[("-", "csrf_invalid")] == 1
        assert "wsguard_message_pipeline_seconds" in families

        # Also on the WebSocket port, as a plain GET.
        def healthz() -> tuple[int, str]:
            url = f"http://127.0.0.1:{env.service.port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (loopback)
                return resp.status, resp.headers["Cache-Control"]

        assert await asyncio.to_thread(healthz) == (200, "no-store")
        await ws.close()


async def test_thousand_cycles_leave_nothing_behind(env_factory: Any) -> None:
    """After 1,000 connect/disconnect cycles every registry is empty and memory is back."""
    async with env_factory() as env:
        tokens = [
            env.token(f"cycler{i}") for i in range(7)
        ]  # clients reconnect with what they hold

        async def cycles(count: int) -> None:
            for i in range(count):
                ws = await env.connect(tokens[i % 7])
                await welcome(ws)
                await ws.close()
            async with asyncio.timeout(10):
                while env.guard.sessions.count():
                    await asyncio.sleep(0.05)
            gc.collect()

        await cycles(100)  # warm caches (metrics children, interned strings, ...)
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            await cycles(1000)
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        # A leak of even 1 KiB per session would show as 1,000 KiB here.
        assert grown < 256 * 1024, f"{grown} bytes kept after 1,000 cycles"
        guard = env.guard
        assert guard.sessions.count() == 0 and guard.sessions.users() == 0
        assert guard.connections.total == 0 and len(guard.connections) == 0
        assert len(guard.user_buckets) == 0


async def test_absolute_lifetime_and_idle_limit_close_4408(env_factory: Any) -> None:
    """The idle limit counts application messages only; the lifetime closes whatever happens."""
    config = _config(sessions=SessionConfig(max_lifetime=3600, idle_timeout=120))
    async with env_factory(config) as env:
        idle = await env.connect(env.token("idler", ttl=7200))
        await welcome(idle)
        busy = await env.connect(env.token("busy", ttl=7200))
        csrf = (await welcome(busy))["csrfToken"]
        for _ in range(1):
            await env.tick(60)
            await idle.send(json.dumps({"type": "health-check"}))  # not an application message
            await idle.recv()
            await busy.send(
                json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": csrf})
            )
            await busy.recv()
        await env.tick(61)  # idle for 121 s: over the limit; busy spoke 61 s ago
        assert await _closed_code(idle) == 4408
        started = env.clock.now() - 121
        code = None
        for _ in range(60):  # keep chatting, minute by minute, until the absolute lifetime
            try:
                await busy.send(
                    json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": csrf})
                )
                while True:
                    frame = json.loads(await busy.recv())
                    if frame["type"] == "csrf_rotated":
                        csrf = frame["payload"]["csrfToken"]
                    elif frame["type"] == "chat":
                        break
                await env.tick(60)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                code = exc.rcvd.code
                break
        assert code == 4408
        assert env.clock.now() - started >= 3600


async def test_post_and_delete_work_on_the_websocket_port(env_factory: Any) -> None:
    """With no HTTP API port, tickets and the admin API answer on the WebSocket port."""
    async with env_factory(http_port=None) as env:
        env.http = f"http://127.0.0.1:{env.service.port}"  # the WebSocket port
        status, body = await env.request("POST", "/auth/ticket", token=env.token())
        assert status == 200
        async with connect(f"{env.url}?ticket={body['ticket']}", open_timeout=5) as ws:
            info = await welcome(ws)
            status, _ = await env.request("DELETE", f"/admin/sessions/{info['sessionId']}")
            assert status == 200
            assert await _closed_code(ws) == 4410
        assert (await env.request("DELETE", "/admin/bans", {"kind": "ip"}))[0] == 400
        assert (await env.request("POST", "/admin/bans", token=None))[0] == 401
        assert (await env.request("PUT", "/auth/ticket", token=env.token()))[0] == 405
        assert b'reason="timeout"' not in env.guard.metrics.render()[0]  # not counted as drops
        assert await _status(env, env.token("after")) == 101


async def test_admin_api_and_metrics_stay_off_the_public_port(env_factory: Any) -> None:
    """With an HTTP API port, the WebSocket port answers /admin and /metrics with 404."""
    async with env_factory() as env:
        public = f"http://127.0.0.1:{env.service.port}"
        private = env.http
        env.http = public
        assert (await env.request("GET", "/admin/sessions"))[0] == 404
        assert (await env.request("GET", "/metrics"))[0] == 404
        assert (await env.request("GET", "/healthz"))[0] == 200
        assert (await env.request("POST", "/auth/ticket", token=env.token()))[0] == 200
        env.http = private
        assert (await env.request("GET", "/admin/sessions"))[0] == 200


async def test_admin_token_guessing_spends_the_attempt_budget(env_factory: Any) -> None:
    """Wrong admin tokens count against the IP's attempt budget: 401, then 429."""
    config = GuardConfig(
        jwt=JWT,
        origins=OriginConfig(allowed=(ALLOWED_ORIGIN,)),
        admin_token=ADMIN,
        rate_limits=RateLimitConfig(handshake_attempts=3),
    )
    async with env_factory(config) as env:
        codes = [(await env.request("GET", "/admin/sessions", token="g" * 40))[0] for _ in range(4)]
        assert codes == [401, 401, 401, 429]


async def test_admin_ban_closes_live_sessions_4403(env_factory: Any) -> None:
    """A ban by the admin API closes the banned user's open sessions with 4403."""
    async with env_factory() as env:
        ws = await env.connect(env.token("mallory"))
        await welcome(ws)
        other = await env.connect(env.token("olive"))
        await welcome(other)
        status, _ = await env.request("POST", "/admin/bans", {"kind": "user", "key": "mallory"})
        assert status == 201
        assert await _closed_code(ws) == 4403
        await other.send(json.dumps({"type": "health-check"}))
        assert json.loads(await other.recv())["type"] == "health-check"
        await other.close()


async def test_message_after_expiry_closes_4401_before_any_tick(env_factory: Any) -> None:
    """A message that arrives after exp is never handled, even between timer ticks."""
    async with env_factory() as env:
        ws = await env.connect(env.token(ttl=120))
        csrf = (await welcome(ws))["csrfToken"]
        env.clock.advance(121)  # no tick
        await ws.send(json.dumps({"type": "chat", "payload": {"text": "late"}, "csrfToken": csrf}))
        assert await _closed_code(ws) == 4401


async def test_plain_http_on_the_websocket_port_is_bounded(env_factory: Any) -> None:
    """A POST trickled in small pieces is answered; an oversized head gets 431."""
    async with env_factory(http_port=None) as env:
        request = (
            b"POST /auth/ticket HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {env.token()}\r\n".encode()
            + b"Content-Length: 0\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", env.service.port)
        for i in range(0, len(request), 7):
            writer.write(request[i : i + 7])
            await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200") and b'"ticket"' in answer
        reader, writer = await asyncio.open_connection("127.0.0.1", env.service.port)
        writer.write(b"POST /auth/ticket HTTP/1.1\r\nX-Pad: " + b"a" * 10_000 + b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 431")
