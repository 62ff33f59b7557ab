"""Production mode at the handshake, response headers, and the cookie source.

Production servers here run over plain ws:// on 127.0.0.1 on purpose: the point
is what they answer to a plain upgrade.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import (
    ALLOWED_ORIGIN,
    AUDIENCE,
    ISSUER,
    SECRET,
    exchange,
    make_token,
    welcome,
)
from wsguard.adapters.connection import READ_CHUNK
from wsguard.adapters.websockets import GuardedService, serve
from wsguard.config import CredentialsConfig, GuardConfig, JwtConfig, OriginConfig
from wsguard.core.client_ip import NetworkConfig
from wsguard.core.guard import Guard
from wsguard.demo import install_demo

JWT = JwtConfig(secret=SECRET, audience=AUDIENCE, issuer=ISSUER)
HSTS = "max-age=63072000; includeSubDomains"


@asynccontextmanager
async def running(config: GuardConfig) -> AsyncIterator[GuardedService]:
    guard = Guard(config)
    install_demo(guard)
    async with serve(guard, "127.0.0.1", 0, http_port=0) as service:
        yield service


def _production(**kw: Any) -> GuardConfig:
    return GuardConfig(
        mode="production", jwt=JWT, origins=OriginConfig(allowed=(ALLOWED_ORIGIN,)), **kw
    )


async def _status(url: str, headers: dict[str, str]) -> InvalidStatus | None:
    try:
        async with connect(url, additional_headers=headers, open_timeout=5) as ws:
            await welcome(ws)
            return None
    except InvalidStatus as exc:
        return exc


async def test_plain_upgrade_in_production_gets_426() -> None:
    """No TLS and no trusted proxy: 426 with a fixed body and HSTS."""
    async with running(_production()) as service:
        url = f"ws://127.0.0.1:{service.port}/ws"
        refusal = await _status(url, {"Authorization": f"Bearer {make_token()}"})
        assert refusal is not None
        assert refusal.response.status_code == 426
        assert refusal.response.body == b"Upgrade Required\n"
        assert refusal.response.headers["Strict-Transport-Security"] == HSTS
        assert refusal.response.headers["Cache-Control"] == "no-store"


async def test_forged_forwarded_proto_from_untrusted_peer_gets_426() -> None:
    """X-Forwarded-Proto: https counts only from a trusted proxy."""
    async with running(_production()) as service:
        url = f"ws://127.0.0.1:{service.port}/ws"
        headers = {"Authorization": f"Bearer {make_token()}", "X-Forwarded-Proto": "https"}
        refusal = await _status(url, headers)
        assert refusal is not None and refusal.response.status_code == 426


async def test_forwarded_proto_from_trusted_proxy_is_accepted() -> None:
    """Behind a trusted TLS-terminating proxy, the upgrade goes through."""
    config = _production(network=NetworkConfig(trusted_proxies=("127.0.0.1/32",)))
    async with running(config) as service:
        url = f"ws://127.0.0.1:{service.port}/ws"
        headers = {
            "Authorization": f"Bearer {make_token()}",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-For": "203.0.113.7",
        }
        assert await _status(url, headers) is None
        refusal = await _status(url, {"Authorization": f"Bearer {make_token()}"})
        assert refusal is not None and refusal.response.status_code == 426


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:  # it holds the response's socket
            return exc.code, dict(exc.headers)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/admin/sessions", "/nope"])
async def test_every_http_response_carries_the_headers(path: str) -> None:
    """nosniff, no-store and (production) HSTS on both ports; no Server banner."""
    async with running(_production()) as service:
        for port in (service.port, service.http_port):
            status, headers = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")
            assert status in (200, 404, 401), (port, path, status)
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Cache-Control"] == "no-store"
            assert headers["Strict-Transport-Security"] == HSTS
            assert "Server" not in headers


async def test_cookie_source_requires_origin() -> None:
    """Cookie auth: no Origin or a foreign one is refused (CSWSH); the allowed Origin works."""
    config = GuardConfig(
        jwt=JWT,
        origins=OriginConfig(allowed=(ALLOWED_ORIGIN,)),
        credentials=CredentialsConfig(cookie="wsguard_token"),
    )
    async with running(config) as service:
        url = f"ws://127.0.0.1:{service.port}/ws"
        cookie = {"Cookie": f"theme=dark; wsguard_token={make_token()}"}
        refusal = await _status(url, cookie)
        assert refusal is not None and refusal.response.status_code == 403
        refusal = await _status(url, {**cookie, "Origin": "https://evil.example"})
        assert refusal is not None and refusal.response.status_code == 403
        # The development localhost origins are not added under cookie auth.
        refusal = await _status(url, {**cookie, "Origin": "http://localhost:8765"})
        assert refusal is not None and refusal.response.status_code == 403
        assert await _status(url, {**cookie, "Origin": ALLOWED_ORIGIN}) is None


def test_cookie_source_needs_an_allow_list() -> None:
    from wsguard.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="credentials.cookie"):
        GuardConfig(jwt=JWT, credentials=CredentialsConfig(cookie="t"))


async def test_reads_in_bounded_chunks_and_a_message_spanning_reads_arrives_whole() -> None:
    """Sockets are read 64 KiB at a time (asyncio's 256 KiB read buffer came from
    mmap, one per message); a frame of nearly 64 KiB spans two reads and arrives whole."""
    guard = Guard(GuardConfig(jwt=JWT))
    install_demo(guard)
    async with serve(guard, "127.0.0.1", 0) as service:
        url = f"ws://127.0.0.1:{service.port}/ws"
        headers = {"Authorization": f"Bearer {make_token('bulk')}"}
        async with connect(url, additional_headers=headers, max_size=None) as ws:
            info = await welcome(ws)
            assert service.server is not None
            (connection,) = service.server.connections
            assert connection.transport.max_size == READ_CHUNK == 64 * 1024  # type: ignore[attr-defined]
            text = "a" * (65536 - 200)  # the envelope fits in the 64 KiB message limit
            message = {"type": "chat", "id": "big-1", "payload": {"text": text}}
            reply = await exchange(ws, {**message, "csrfToken": info["csrfToken"]})
            assert reply["payload"]["text"] == text
