"""Abuse defences through real connections on 127.0.0.1, with an injected clock.

Each test performs the abuse, checks the defence, then checks that a client
from another loopback address (127.0.0.2) is still served. Linux routes all of
127.0.0.0/8 to the loopback interface, so a client can pick its source address.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ALLOWED_ORIGIN, AUDIENCE, ISSUER, SECRET, make_token, welcome
from wsguard.adapters.websockets import GuardedService, serve
from wsguard.config import GuardConfig, JwtConfig, OriginConfig
from wsguard.core.anomaly import AnomalyConfig
from wsguard.core.client_ip import NetworkConfig
from wsguard.core.clock import FakeClock
from wsguard.core.guard import Guard
from wsguard.core.ratelimit import RateLimitConfig
from wsguard.demo import install_demo
from wsguard.reputation import Reputation, ReputationConfig

OTHER_IP = "127.0.0.2"


def _config(**sections: Any) -> GuardConfig:
    return GuardConfig(
        jwt=JwtConfig(secret=SECRET, audience=AUDIENCE, issuer=ISSUER),
        origins=OriginConfig(allowed=(ALLOWED_ORIGIN,)),
        **sections,
    )


class Env:
    def __init__(self, service: GuardedService, clock: FakeClock) -> None:
        self.service = service
        self.guard = service.guard
        self.clock = clock
        self.url = f"ws://127.0.0.1:{service.port}/ws"

    def connect(self, token: str | None = None, source: str = "127.0.0.1", **kw: Any) -> Any:
        headers = dict(kw.pop("additional_headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return connect(
            self.url,
            additional_headers=headers,
            local_addr=(source, 0),
            open_timeout=5,
            close_timeout=2,
            **kw,
        )

    async def served(self, source: str = OTHER_IP, sub: str = "legit") -> None:
        """A legitimate client from ``source`` gets its chat back."""
        async with self.connect(make_token(sub), source=source) as ws:
            info = await welcome(ws)
            await ws.send(
                json.dumps(
                    {"type": "chat", "payload": {"text": "ok"}, "csrfToken": info["csrfToken"]}
                )
            )
            reply = json.loads(await ws.recv())
            assert reply["type"] == "chat" and reply["payload"]["from"] == sub


@pytest.fixture
def env_factory() -> Callable[..., Any]:
    @asynccontextmanager
    async def factory(config: GuardConfig | None = None, **serve_kw: Any) -> AsyncIterator[Env]:
        clock = FakeClock(
            start=time.time() + 2
        )  # tokens made with the real clock are not "from the future"
        guard = Guard(config or _config(), clock=clock)
        install_demo(guard)
        async with serve(guard, "127.0.0.1", 0, **serve_kw) as service:
            yield Env(service, clock)

    return factory


async def _status(env: Env, token: str | None, source: str = "127.0.0.1", **kw: Any) -> int:
    try:
        async with env.connect(token, source=source, **kw) as ws:
            await welcome(ws)
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def _drain_until_closed(ws: Any, limit: int = 5000) -> tuple[list[dict[str, Any]], int]:
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(10):
            for _ in range(limit):
                frames.append(json.loads(await ws.recv()))
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return frames, exc.rcvd.code
    raise AssertionError("connection was not closed")


async def test_message_flood_gets_budget_then_4429_then_ban(env_factory: Any) -> None:
    """1,000 messages at once: the burst passes, then RATE_LIMITED, then 4429 and a ban."""
    async with env_factory() as env:
        ws = await env.connect(make_token("flooder"))
        csrf = (await welcome(ws))["csrfToken"]
        frame = json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": csrf})
        for _ in range(1000):
            try:
                await ws.send(frame)
            except ConnectionClosed:
                break
        frames, code = await _drain_until_closed(ws)
        assert code == 4429
        chats = [f for f in frames if f["type"] == "chat"]
        errors = [f for f in frames if f["type"] == "error"]
        assert len(chats) == RateLimitConfig().message_burst
        assert errors and all(e["payload"]["code"] == "RATE_LIMITED" for e in errors)
        assert all(e["payload"]["retryAfterMs"] >= 1 for e in errors)
        assert await _status(env, make_token("flooder"), source="127.0.0.1") == 403
        assert await _status(env, make_token("someone-else"), source="127.0.0.1") == 403
        await env.served()
        # The ban runs out: 60 s for a first ban.
        env.clock.advance(61)
        assert await _status(env, make_token("someone-else"), source="127.0.0.1") == 101


async def test_many_tabs_share_the_user_budget(env_factory: Any) -> None:
    """Three tabs of one user together get the user budget, not three connection budgets."""
    limits = RateLimitConfig(message_burst=20, user_burst=30, violations_to_disconnect=50)
    config = _config(
        rate_limits=limits,
        anomaly=AnomalyConfig(disconnect_threshold=10_000, restrict_threshold=5_000),
    )
    async with env_factory(config) as env:
        tabs = [await env.connect(make_token("tabby")) for _ in range(3)]
        csrfs = [(await welcome(t))["csrfToken"] for t in tabs]
        delivered = 0
        for tab, csrf in zip(tabs, csrfs, strict=True):
            for _ in range(20):
                await tab.send(
                    json.dumps(
                        {"type": "chat", "id": "t", "payload": {"text": "x"}, "csrfToken": csrf}
                    )
                )
        refused = 0
        for tab in tabs:
            answers = 0
            async with asyncio.timeout(10):
                while answers < 20:  # one answer per message sent, beside others' broadcasts
                    frame = json.loads(await tab.recv())
                    if frame["type"] == "chat" and frame.get("id") == "t":
                        delivered += 1
                        answers += 1
                    elif frame["type"] == "error":
                        assert frame["payload"]["code"] == "RATE_LIMITED"
                        refused += 1
                        answers += 1
        assert (delivered, refused) == (30, 30)
        for tab in tabs:
            await tab.close()
        await env.served()


async def test_connection_flood_from_one_ip(env_factory: Any) -> None:
    """The 11th handshake in 10 s from one IP gets 429 with Retry-After; others are served."""
    async with env_factory() as env:
        statuses = []
        for _ in range(10):
            statuses.append(await _status(env, make_token("burst")))
        assert statuses == [101] * 10
        with pytest.raises(InvalidStatus) as info:
            async with env.connect(make_token("burst")):
                pass
        assert info.value.response.status_code == 429
        assert int(info.value.response.headers["Retry-After"]) >= 1
        await env.served()


async def test_open_connection_cap_per_ip(env_factory: Any) -> None:
    """Past max_connections_per_ip open sockets, one IP gets 429."""
    limits = RateLimitConfig(max_connections_per_ip=3, handshake_attempts=100)
    async with env_factory(_config(rate_limits=limits)) as env:
        held = [await env.connect(make_token(f"u{i}")) for i in range(3)]
        for ws in held:
            await welcome(ws)
        assert await _status(env, make_token("u9")) == 429
        await env.served()
        await held[0].close()
        await asyncio.sleep(0.1)
        assert await _status(env, make_token("u9")) == 101
        for ws in held[1:]:
            await ws.close()


async def test_forged_x_forwarded_for_from_untrusted_peer_is_ignored(env_factory: Any) -> None:
    """A client that forges X-Forwarded-For directly is still counted under its own IP."""
    async with env_factory() as env:
        for i in range(10):
            forged = {"X-Forwarded-For": f"198.51.100.{i}"}
            assert await _status(env, make_token("xff"), additional_headers=forged) == 101
        forged = {"X-Forwarded-For": "198.51.100.77"}
        assert await _status(env, make_token("xff"), additional_headers=forged) == 429
        await env.served()


async def test_x_forwarded_for_from_trusted_proxy_keys_the_client(env_factory: Any) -> None:
    """Behind a trusted proxy, each forwarded client has its own budget."""
    config = _config(network=NetworkConfig(trusted_proxies=("127.0.0.1/32",)))
    async with env_factory(config) as env:
        for _ in range(10):
            headers = {"X-Forwarded-For": "203.0.113.5"}
            assert await _status(env, make_token("a"), additional_headers=headers) == 101
        assert (
            await _status(
                env, make_token("a"), additional_headers={"X-Forwarded-For": "203.0.113.5"}
            )
            == 429
        )
        # Another client behind the same proxy is not affected.
        assert (
            await _status(
                env, make_token("b"), additional_headers={"X-Forwarded-For": "203.0.113.6"}
            )
            == 101
        )
        session_ips = {s.peer for s in env.guard.sessions.all()}
        assert "203.0.113.5" not in session_ips  # they all closed; the registry is empty
        await env.served()


async def test_anomaly_score_restricts_then_disconnects(env_factory: Any) -> None:
    """CSRF failures pass 50 (RESTRICTED; health-check still passes), then 100 (4429)."""
    async with env_factory() as env:
        ws = await env.connect(make_token("prober"))
        csrf = (await welcome(ws))["csrfToken"]
        bad = json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": "wrong"})
        for _ in range(3):  # 3 x 20 = 60
            await ws.send(bad)
            assert json.loads(await ws.recv())["payload"]["code"] == "CSRF_INVALID"
        await ws.send(json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": csrf}))
        assert json.loads(await ws.recv())["payload"]["code"] == "RESTRICTED"
        await ws.send(json.dumps({"type": "health-check"}))
        assert json.loads(await ws.recv())["type"] == "health-check"
        # The score decays: 60 s later (one half-life) it is 30, under the threshold.
        env.clock.advance(60)
        await ws.send(json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": csrf}))
        assert json.loads(await ws.recv())["type"] == "chat"
        for _ in range(6):  # 30 + 20 = 50, then RESTRICTED refusals add 15 each
            await ws.send(bad)
        frames, code = await _drain_until_closed(ws)
        assert code == 4429
        assert env.guard.bans.banned("user", "prober", env.clock.now()) is not None
        await env.served()


async def test_credential_stuffing_bans_the_ip(env_factory: Any) -> None:
    """Five subjects tried from one IP with bad tokens: the IP is banned, even for a good token."""
    async with env_factory() as env:
        forged = JwtConfig(secret="x" * 40, audience=AUDIENCE, issuer=ISSUER)
        from wsguard.core.auth import issue_token

        for i in range(5):
            bad = issue_token(forged, f"victim{i}", ["user"], 600, env.clock.now())
            assert await _status(env, bad) in (401, 403)
        assert await _status(env, make_token("real-user")) == 403
        assert env.guard.bans.banned("ip", "127.0.0.1", env.clock.now()) is not None
        await env.served()


async def test_ping_flood_closes_4429(env_factory: Any) -> None:
    """More client pings than the ping budget closes the connection with 4429."""
    async with env_factory() as env:
        ws = await env.connect(make_token("pinger"))
        await welcome(ws)
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(10):
                for _ in range(50):
                    await ws.ping()
                await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4429
        await env.served()


async def test_block_list_hot_reload(env_factory: Any, tmp_path: Path) -> None:
    """An IP added to the block list file is refused after the reload; others are served."""
    blocklist = tmp_path / "block.netset"
    blocklist.write_text("# test list\n192.0.2.0/24\n")
    clock = FakeClock(
        start=time.time() + 2
    )  # tokens made with the real clock are not "from the future"
    reputation = Reputation(
        ReputationConfig(blocklist_file=str(blocklist), reload_interval=1.0), clock
    )
    reputation.load()
    guard = Guard(_config(), clock=clock)
    install_demo(guard)
    async with serve(guard, "127.0.0.1", 0, reputation=reputation) as service:
        env = Env(service, clock)
        assert await _status(env, make_token("a"), source="127.0.0.3") == 101
        blocklist.write_text("# test list\n192.0.2.0/24\n127.0.0.3\nnot-an-ip\n")
        os.utime(blocklist, (clock.now() + 5, clock.now() + 5))
        clock.advance(2)
        reputation.maybe_reload()
        assert await _status(env, make_token("a"), source="127.0.0.3") == 403
        await env.served()


async def test_exempt_ip_skips_ip_budgets_but_not_message_checks(env_factory: Any) -> None:
    """An exempt monitoring IP is never IP-banned or budgeted; its messages are still checked."""
    limits = RateLimitConfig(handshake_attempts=2)
    config = _config(rate_limits=limits, network=NetworkConfig(exempt_ips=("127.0.0.4/32",)))
    async with env_factory(config) as env:
        for _ in range(5):  # over the attempt budget of 2
            assert await _status(env, make_token("monitor"), source="127.0.0.4") == 101
        ws = await env.connect(make_token("monitor"), source="127.0.0.4")
        await welcome(ws)
        bad = json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": "wrong"})
        await ws.send(bad)
        assert json.loads(await ws.recv())["payload"]["code"] == "CSRF_INVALID"
        for _ in range(5):
            await ws.send(bad)
        _, code = await _drain_until_closed(ws)
        assert code == 4429
        assert env.guard.bans.banned("ip", "127.0.0.4", env.clock.now()) is None
        assert env.guard.bans.banned("user", "monitor", env.clock.now()) is not None
        await env.served(source="127.0.0.6")


async def test_per_type_budget(env_factory: Any) -> None:
    """A type declared with 2 per minute: the third gets RATE_LIMITED; a minute later it passes."""
    async with env_factory() as env:
        from wsguard.core.types import FileUploadPayload

        async def upload(ctx: Any, message: Any) -> None:
            await ctx.reply(message, "file_ok", {})

        env.guard.register("file_upload", FileUploadPayload, upload, rate_limit=(2, 60, 2))
        ws = await env.connect(make_token("uploader"))
        csrf = (await welcome(ws))["csrfToken"]
        frame = {"type": "file_upload", "payload": {"name": "a.txt", "size": 1}, "csrfToken": csrf}
        codes = []
        for _ in range(3):
            await ws.send(json.dumps(frame))
            reply = json.loads(await ws.recv())
            codes.append(reply["type"] if reply["type"] != "error" else reply["payload"]["code"])
        assert codes == ["file_ok", "file_ok", "RATE_LIMITED"]
        env.clock.advance(61)
        await ws.send(json.dumps(frame))
        assert json.loads(await ws.recv())["type"] == "file_ok"
        await ws.close()


async def test_silent_connections_are_dropped_and_counted(env_factory: Any) -> None:
    """Sockets that never send a handshake are dropped at open_timeout and charged to the IP."""
    from wsguard.config import ServerConfig

    config = _config(
        server=ServerConfig(open_timeout=0.5), rate_limits=RateLimitConfig(handshake_attempts=3)
    )
    async with env_factory(config) as env:
        writers = []
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", env.service.port)
            writers.append(writer)
        await asyncio.sleep(1.5)  # past open_timeout: the server dropped them
        for writer in writers:
            writer.close()
        families = env.guard.metrics.render()[0].decode()
        assert 'wsguard_handshake_refusals_total{reason="timeout"} 3.0' in families
        assert await _status(env, make_token("slowloris")) == 429
        await env.served()


async def test_ip_score_sums_connections(env_factory: Any) -> None:
    """Probes spread over two connections still add up on the IP: 4429 and an IP ban."""
    async with env_factory() as env:
        bad = json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": "wrong"})
        first = await env.connect(make_token("spread1"))
        await welcome(first)
        for _ in range(3):  # 60 on this connection and on the IP
            await first.send(bad)
            await first.recv()
        second = await env.connect(make_token("spread2"))
        await welcome(second)
        await second.send(bad)
        await second.send(bad)  # IP: 100
        _, code = await _drain_until_closed(second)
        assert code == 4429
        assert env.guard.bans.banned("ip", "127.0.0.1", env.clock.now()) is not None
        await first.close()
        await env.served()


async def test_ban_escalates_on_repeat(env_factory: Any) -> None:
    """A second abuse after the first ban ran out is banned twice as long."""
    async with env_factory() as env:
        bad = json.dumps({"type": "chat", "payload": {"text": "x"}, "csrfToken": "wrong"})
        durations = []
        for _ in range(2):
            ws = await env.connect(make_token("repeat"))
            await welcome(ws)
            for _ in range(8):
                await ws.send(bad)
            _, code = await _drain_until_closed(ws)
            assert code == 4429
            ban = env.guard.bans.banned("user", "repeat", env.clock.now())
            assert ban is not None
            durations.append(round(ban.until - env.clock.now()))
            env.clock.advance(ban.until - env.clock.now() + 1)  # serve the ban out
            env.guard.ip_scores.forget("127.0.0.1")
        assert durations == [60, 120]
        await env.served()
