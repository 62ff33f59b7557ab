"""The per-message policy and the handshake policy, with no network and a fake clock."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from wsguard.config import GuardConfig, JwtConfig, MessageConfig, OriginConfig
from wsguard.core.auth import issue_token
from wsguard.core.clock import FakeClock
from wsguard.core.connection import ConnectionPolicy
from wsguard.core.decisions import Accept, Close, Deliver, HandshakeRequest, Reject, Reply
from wsguard.core.guard import Guard
from wsguard.core.registry import SessionConfig
from wsguard.core.types import ChatPayload
from wsguard.exceptions import ConfigurationError

SECRET = "core-secret-0123456789abcdef0123456789abcdef"


async def _noop(ctx: Any, message: Any) -> None:
    return None


def _guard(clock: FakeClock, **messages: Any) -> Guard:
    config = GuardConfig(
        jwt=JwtConfig(secret=SECRET),
        origins=OriginConfig(allowed=("https://app.example",)),
        messages=MessageConfig(**messages),
    )
    guard = Guard(config, clock=clock)
    guard.register("chat", ChatPayload, _noop, roles={"user"})
    return guard


def _token(clock: FakeClock, sub: str = "alice", ttl: float = 600, at: float | None = None) -> str:
    return issue_token(
        JwtConfig(secret=SECRET), sub, ["user"], ttl, clock.now() if at is None else at
    )


def _request(token: str | None = None, **headers: str) -> HandshakeRequest:
    pairs = [(k.lower().replace("_", "-"), v) for k, v in headers.items()]
    if token is not None:
        pairs.append(("authorization", f"Bearer {token}"))
    return HandshakeRequest(peer="127.0.0.1", path="/ws", query="", headers=tuple(pairs))


def _open(guard: Guard, clock: FakeClock) -> ConnectionPolicy:
    decision = guard.handshake(_request(_token(clock)))
    assert isinstance(decision, Accept)
    return decision.policy


def _frame(kind: str = "chat", csrf: str | None = None, **payload: Any) -> str:
    message: dict[str, Any] = {"type": kind, "payload": payload or {"text": "hi"}}
    if csrf is not None:
        message["csrfToken"] = csrf
    return json.dumps(message)


def _code(decision: Any) -> str:
    assert isinstance(decision, Reply), decision
    code: str = json.loads(decision.frame)["payload"]["code"]
    return code


def test_valid_message_is_delivered_as_frozen_struct() -> None:
    clock = FakeClock()
    policy = _open(_guard(clock), clock)
    decision = policy.receive(_frame(csrf=policy.session.csrf_token, text="<b>x</b><i>y"))
    assert isinstance(decision, Deliver)
    assert decision.message.payload == ChatPayload(text="<b>x</b><i>y</i>", room="general")
    with pytest.raises(AttributeError):
        decision.message.payload.text = "changed"  # type: ignore[misc]


def test_csrf_rotation_grace_edges() -> None:
    """After a rotation the old token works for exactly the grace period, never after."""
    clock = FakeClock()
    policy = _open(_guard(clock), clock)
    old = policy.session.csrf_token
    new = policy.rotate_csrf()
    assert new != old
    clock.advance(SessionConfig().csrf_grace)
    assert isinstance(policy.receive(_frame(csrf=old)), Deliver)
    clock.advance(0.001)
    assert _code(policy.receive(_frame(csrf=old))) == "CSRF_INVALID"
    assert isinstance(policy.receive(_frame(csrf=new)), Deliver)


def test_token_refresh_rules() -> None:
    """Same subject and not older: accepted with a new CSRF token; else TOKEN_INVALID."""
    clock = FakeClock()
    policy = _open(_guard(clock), clock)
    old_csrf = policy.session.csrf_token
    older = _token(clock, at=clock.now() - 10)
    other = _token(clock, sub="bob")
    clock.advance(100)
    fresh = _token(clock, ttl=3600)
    for token, expected in (
        (older, "TOKEN_INVALID"),
        (other, "TOKEN_INVALID"),
        ("x.y.z", "TOKEN_INVALID"),
    ):
        assert _code(policy.receive(_frame("token_refresh", token=token))) == expected
    decision = policy.receive(_frame("token_refresh", token=fresh))
    assert isinstance(decision, Reply)
    frame = json.loads(decision.frame)
    assert frame["type"] == "token_refreshed"
    assert frame["payload"]["expiresAt"] == int((clock.now() + 3600) * 1000)
    assert frame["payload"]["csrfToken"] == policy.session.csrf_token != old_csrf


def test_oversized_and_binary_frames_close() -> None:
    clock = FakeClock()
    policy = _open(_guard(clock, max_message_bytes=1024), clock)
    decision = policy.receive("é" * 600)  # 600 characters, 1,200 bytes
    assert isinstance(decision, Close) and decision.code == 1009
    policy = _open(_guard(clock), clock)
    decision = policy.receive(b"\x00")
    assert isinstance(decision, Close) and decision.code == 1003
    assert isinstance(policy.receive(_frame(csrf=policy.session.csrf_token)), Close)


@pytest.mark.parametrize(
    "origin, accepted",
    [
        ("https://app.example", True),
        ("https://APP.example:443", True),
        ("https://app.example:444", False),
        ("http://app.example", False),
        ("null", False),
        ("https://evil.example", False),
        ("http://localhost:8765", True),  # development mode, the configured port
        ("http://localhost:9999", False),
    ],
)
def test_origin_allow_list_is_exact(origin: str, accepted: bool) -> None:
    clock = FakeClock()
    decision = _guard(clock).handshake(_request(_token(clock), origin=origin))
    assert isinstance(decision, Accept) is accepted
    if not accepted:
        assert isinstance(decision, Reject) and decision.status == 403


def test_origin_required() -> None:
    clock = FakeClock()
    config = GuardConfig(
        jwt=JwtConfig(secret=SECRET),
        origins=OriginConfig(allowed=("https://a.example",), require=True),
    )
    decision = Guard(config, clock=clock).handshake(_request(_token(clock)))
    assert isinstance(decision, Reject) and decision.status == 403


def test_token_expiry_uses_injected_clock() -> None:
    clock = FakeClock()
    guard = _guard(clock)
    token = _token(clock, ttl=60)
    clock.advance(61)
    decision = guard.handshake(_request(token))
    assert isinstance(decision, Reject) and decision.status == 401
    assert token not in decision.reason


def test_registration_refuses_mutable_schemas() -> None:
    class Mutable(msgspec.Struct):
        x: int

    guard = _guard(FakeClock())
    with pytest.raises(ConfigurationError, match="frozen"):
        guard.register("m", Mutable, _noop)
    with pytest.raises(ConfigurationError, match="name"):
        guard.register("bad name", ChatPayload, _noop)
