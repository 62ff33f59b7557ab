"""What the benchmark processes share: the guarded configuration, tokens, limits."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from wsguard import Html
from wsguard.audit.config import AuditConfig
from wsguard.config import GuardConfig, JwtConfig
from wsguard.core.anomaly import AnomalyConfig
from wsguard.core.auth import issue_token
from wsguard.core.ratelimit import RateLimitConfig
from wsguard.core.registry import SessionConfig

HOST = "127.0.0.1"
PATH = "/ws"
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
AUDIENCE = "wsguard-bench"
ISSUER = "https://auth.bench"
SUBJECT = "bench"  # one subject: distinct subjects per IP look like credential stuffing
ROLES = ("user",)

# 100-byte chat texts: plain, and with markup that the Html field cleans.
PLAIN_TEXT = ("Hello there, this is a plain chat message for the benchmark. " * 2)[:100]
# The same length in characters, not ASCII (sent raw, as browsers do), already NFC.
UNICODE_TEXT = ("Grüße aus Köln, ça va? Да, всё хорошо 😀 " * 3)[:100]
MARKUP_TEXT = (
    '<p>Hello <b>there</b>, see <a href="https://example.com/a">this</a> &amp; <i>that</i>'
    " right now!</p>"
)


class EchoPlain(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``echo``: a plain-text chat message."""

    text: str


class EchoMarkup(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``echo_html``: a chat message whose text is cleaned as HTML."""

    text: Html


class AdminOnly(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``admin_only``: a type the benchmark's token may not send (roles)."""

    text: str


def jwt_config() -> JwtConfig:
    return JwtConfig(secret=SECRET, audience=AUDIENCE, issuer=ISSUER)


def guarded_config(
    audit_path: str | Path, *, audit_queue: int = 10_000, **rate_limits: float
) -> GuardConfig:
    """Everything on, with limits high enough never to refuse the benchmark's load.

    ``audit_queue``: the audit queue's size (the default is wsguard's own).
    """
    limits: dict[str, float] = {
        "message_rate": 1e9,
        "message_burst": 10**9,
        "user_rate": 1e9,
        "user_burst": 10**9,
        "handshake_attempts": 10**9,
        "max_connections_per_ip": 10**6,
        "max_connections_total": 10**6,
    }
    limits.update(rate_limits)
    return GuardConfig(
        jwt=jwt_config(),
        rate_limits=RateLimitConfig(**limits),  # type: ignore[arg-type]
        sessions=SessionConfig(max_sessions_per_user=10**6),
        anomaly=AnomalyConfig(
            restrict_threshold=1e12,
            disconnect_threshold=1e12,
            stuffing_failures=10**9,
            stuffing_subjects=10**9,
        ),
        audit=AuditConfig(path=str(audit_path), queue_size=audit_queue),
    )


def make_token(ttl: float = 3600.0, roles: Iterable[str] = ROLES) -> str:
    """A fresh HS256 token (a new ``jti`` and ``iat`` every call)."""
    return issue_token(jwt_config(), SUBJECT, roles, ttl, time.time())


def raise_nofile(wanted: int = 16_384) -> int:
    """Raise the soft open-files limit towards ``wanted``; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
