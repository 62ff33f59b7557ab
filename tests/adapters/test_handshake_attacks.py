"""Attacks on the opening handshake against a real server on 127.0.0.1.

Each test performs the attack, checks the refusal, then checks that a
legitimate client on the same server is still served.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import (
    ALLOWED_ORIGIN,
    AUDIENCE,
    SECRET,
    LiveServer,
    assert_served,
    make_token,
    welcome,
)
from wsguard.config import JwtConfig
from wsguard.core.auth import issue_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned_token(alg: str = "none") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    now = int(time.time())
    claims = {"sub": "mallory", "roles": ["admin"], "exp": now + 600, "iat": now, "aud": AUDIENCE}
    return f"{header}.{_b64(json.dumps(claims).encode())}."


def _tampered_token() -> str:
    header, payload, signature = make_token("mallory", roles=("user",)).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin"]
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _token_with(**overrides: Any) -> str:
    now = time.time()
    settings: dict[str, Any] = {
        "secret": SECRET,
        "audience": AUDIENCE,
        "issuer": "https://auth.test",
    }
    settings.update(overrides.pop("config", {}))
    return issue_token(
        JwtConfig(**settings), "mallory", ["user"], overrides.pop("ttl", 600), now, **overrides
    )


async def _refused(server: LiveServer, token: str | None, **kwargs: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with server.connect(token, **kwargs):
            pass
    return info.value


BAD_TOKENS = {
    "garbage": lambda: "not-a-jwt",
    "expired": lambda: _token_with(ttl=-120),
    "not yet valid": lambda: _token_with(not_before=time.time() + 3600),
    "tampered": _tampered_token,
    "alg none": lambda: _unsigned_token("none"),
    "alg None": lambda: _unsigned_token("None"),
    "wrong secret": lambda: _token_with(config={"secret": "another-secret-" + "x" * 32}),
    "wrong aud": lambda: _token_with(config={"audience": "other-service"}),
    "wrong iss": lambda: _token_with(config={"issuer": "https://evil.test"}),
}


async def test_no_credential_is_refused_with_401(live_server: LiveServer) -> None:
    """No token at all: 401 with a fixed body and no-store; no version banner."""
    refusal = await _refused(live_server, None)
    assert refusal.response.status_code == 401
    assert refusal.response.body == b"Unauthorized\n"
    assert refusal.response.headers["Cache-Control"] == "no-store"
    assert refusal.response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Server" not in refusal.response.headers
    await assert_served(live_server)


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_with_401(live_server: LiveServer, kind: str) -> None:
    """Each forged, expired or misdirected token gets 401, and its text is not echoed."""
    token = BAD_TOKENS[kind]()
    refusal = await _refused(live_server, token)
    assert refusal.response.status_code == 401
    assert token.encode() not in refusal.response.body
    await assert_served(live_server)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "https://app.example:8443",
        "http://app.example",
        "https://app.example.evil.test",
    ],
)
async def test_cross_site_origins_are_refused_with_403(
    live_server: LiveServer, origin: str
) -> None:
    """Cross-Site WebSocket Hijacking: a foreign, null or near-miss Origin gets 403."""
    refusal = await _refused(live_server, make_token(), origin=origin)
    assert refusal.response.status_code == 403
    assert refusal.response.body == b"Forbidden\n"
    await assert_served(live_server)


async def test_allowed_origin_is_served(live_server: LiveServer) -> None:
    """The allow-listed origin connects, with or without its default port spelled out."""
    for origin in (ALLOWED_ORIGIN, ALLOWED_ORIGIN + ":443"):
        async with live_server.connect(make_token(), origin=origin) as ws:
            await welcome(ws)


async def test_query_token_is_refused_by_default(live_server: LiveServer) -> None:
    """A valid token in the URL is refused: the source is off by default."""
    with pytest.raises(InvalidStatus) as info:
        async with _connect_url(live_server, f"{live_server.url}?token={make_token()}"):
            pass
    assert info.value.response.status_code == 401
    await assert_served(live_server)


def _connect_url(server: LiveServer, url: str) -> Any:
    from websockets.asyncio.client import connect

    return connect(url, open_timeout=5)


async def test_subprotocol_token_is_accepted_and_never_echoed(live_server: LiveServer) -> None:
    """wsguard.v1 + wsguard.bearer.<jwt>: the server answers wsguard.v1 only."""
    token = make_token()
    async with live_server.connect(
        None, subprotocols=["wsguard.v1", f"wsguard.bearer.{token}"]
    ) as ws:
        assert ws.subprotocol == "wsguard.v1"
        assert token not in str(ws.response.headers)
        await welcome(ws)


async def test_bearer_subprotocol_without_version_is_refused(live_server: LiveServer) -> None:
    """A bearer offer alone would need the token echoed back: refused."""
    with pytest.raises(InvalidStatus) as info:
        async with live_server.connect(None, subprotocols=[f"wsguard.bearer.{make_token()}"]):
            pass
    assert info.value.response.status_code == 401
    await assert_served(live_server)


async def test_unknown_path_is_404(live_server: LiveServer) -> None:
    """Only the configured endpoint upgrades."""
    with pytest.raises(InvalidStatus) as info:
        async with _connect_url(live_server, live_server.url.replace("/ws", "/admin")):
            pass
    assert info.value.response.status_code == 404
    await assert_served(live_server)


async def test_welcome_frame(live_server: LiveServer) -> None:
    """The first frame follows PROTOCOL.md section 3; the CSRF token has >= 128 bits."""
    token = make_token(ttl=600)
    async with live_server.connect(token) as ws:
        info = await welcome(ws)
    assert set(info) == {
        "sessionId",
        "csrfToken",
        "expiresAt",
        "heartbeatIntervalMs",
        "maxMessageBytes",
        "protocol",
    }
    assert info["protocol"] == "wsguard.v1"
    assert info["maxMessageBytes"] == 65536
    assert len(base64.urlsafe_b64decode(info["csrfToken"] + "==")) * 8 >= 128
    assert abs(info["expiresAt"] - (time.time() + 600) * 1000) < 5000
