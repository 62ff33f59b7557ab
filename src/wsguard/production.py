"""Production mode: the settings that must hold before the server starts.

``mode = "production"`` refuses to start, with a one-line reason, unless
transport security, token verification, the Origin allow list and the audit
log are all configured for production. :func:`production_problems` lists every
reason; :func:`check_production` raises on the first one.

It also holds the two transport helpers production needs at the handshake:
:func:`forwarded_proto_is_https` (``X-Forwarded-Proto`` counts only from a
trusted proxy) and :data:`SECURITY_HEADERS_PRODUCTION` (adds HSTS).
"""

from __future__ import annotations

from collections.abc import Iterable

from wsguard.config import GuardConfig
from wsguard.exceptions import ConfigurationError

MIN_HMAC_SECRET_BYTES = 32  # 256 bits, the output size of HMAC-SHA256

HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")  # two years

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
)
"""On every HTTP response wsguard writes, in any mode."""

SECURITY_HEADERS_PRODUCTION: tuple[tuple[str, str], ...] = (*SECURITY_HEADERS, HSTS)
"""On every HTTP response wsguard writes in production mode."""


def security_headers(config: GuardConfig) -> tuple[tuple[str, str], ...]:
    """The headers for every HTTP response under ``config``'s mode."""
    return SECURITY_HEADERS_PRODUCTION if config.mode == "production" else SECURITY_HEADERS


def _trusted_proxies(config: GuardConfig) -> tuple[str, ...]:
    network = getattr(config, "network", None)
    proxies = getattr(network, "trusted_proxies", None)
    return tuple(proxies) if proxies else ()


def _problems(
    config: GuardConfig, *, tls_enabled: bool, audit_enabled: bool
) -> list[tuple[str, str]]:
    """``(setting, problem)`` pairs, in the order they are reported."""
    if config.mode != "production":
        return []
    found: list[tuple[str, str]] = []
    if not tls_enabled and not _trusted_proxies(config):
        found.append(
            (
                "tls.cert_file",
                "production needs TLS, or trusted_proxies naming a TLS-terminating proxy",
            )
        )
    jwt = config.jwt
    if jwt.uses_hmac and len((jwt.secret or "").encode()) < MIN_HMAC_SECRET_BYTES:
        found.append(
            ("jwt.secret", f"must be at least {MIN_HMAC_SECRET_BYTES} bytes in production")
        )
    allowed = config.origins.allowed
    if not allowed:
        found.append(("origins.allowed", "must list the allowed origins in production"))
    elif any("*" in origin for origin in allowed):
        found.append(("origins.allowed", "must not hold a wildcard in production"))
    if config.credentials.query_token:
        found.append(("credentials.query_token", "must be off in production (URLs leak)"))
    if not jwt.audience:
        found.append(("jwt.audience", "must be set in production"))
    if not audit_enabled:
        found.append(("audit", "the audit log must be on in production"))
    return found


def production_problems(
    config: GuardConfig, *, tls_enabled: bool, audit_enabled: bool
) -> list[str]:
    """Why ``config`` may not run in production, one line each.

    Args:
        config: the effective configuration.
        tls_enabled: the server terminates TLS itself (a cert and key are set).
        audit_enabled: the audit log is on.

    Returns:
        ``"setting: problem"`` lines; empty when fine, and always in development.
    """
    found = _problems(config, tls_enabled=tls_enabled, audit_enabled=audit_enabled)
    return [f"{setting}: {problem}" for setting, problem in found]


def check_production(config: GuardConfig, *, tls_enabled: bool, audit_enabled: bool) -> None:
    """Refuse to start on the first production problem.

    Raises:
        ConfigurationError: naming the setting of the first problem.
    """
    found = _problems(config, tls_enabled=tls_enabled, audit_enabled=audit_enabled)
    if found:
        raise ConfigurationError(*found[0])


def forwarded_proto_is_https(peer_trusted: bool, headers: Iterable[tuple[str, str]]) -> bool:
    """Whether a TLS-terminating proxy says the client used HTTPS.

    Only a trusted peer's ``X-Forwarded-Proto`` counts; anyone else can forge it.
    When the header repeats or holds a list, the last (right-most) value wins:
    it was set by the proxy closest to us.

    Args:
        peer_trusted: the socket peer is one of ``trusted_proxies``.
        headers: the request headers as ``(name, value)`` pairs, any case.
    """
    if not peer_trusted:
        return False
    last: str | None = None
    for name, value in headers:
        if name.lower() == "x-forwarded-proto":
            last = value
    if last is None:
        return False
    return last.rsplit(",", 1)[-1].strip().lower() == "https"


__all__ = [
    "HSTS",
    "MIN_HMAC_SECRET_BYTES",
    "SECURITY_HEADERS",
    "SECURITY_HEADERS_PRODUCTION",
    "check_production",
    "forwarded_proto_is_https",
    "production_problems",
    "security_headers",
]
