"""Production mode: each refusal rule, and X-Forwarded-Proto trust."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import AUDIENCE, make_config
from wsguard.config import CredentialsConfig, GuardConfig, JwtConfig, OriginConfig
from wsguard.exceptions import ConfigurationError
from wsguard.production import (
    SECURITY_HEADERS_PRODUCTION,
    check_production,
    forwarded_proto_is_https,
    production_problems,
    security_headers,
)

FINE = {"tls_enabled": True, "audit_enabled": True}


def hardened(**changes: Any) -> GuardConfig:
    """The test config in production mode: every rule satisfied when TLS and audit are on."""
    return dataclasses.replace(make_config(), mode="production", **changes)


class WithProxies:
    """``config`` with a ``network.trusted_proxies`` section, whatever its version."""

    def __init__(self, config: GuardConfig, proxies: tuple[str, ...]) -> None:
        self._config = config
        self.network = type("Network", (), {"trusted_proxies": proxies})()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


def with_proxies(config: GuardConfig, *proxies: str) -> GuardConfig:
    return cast(GuardConfig, WithProxies(config, proxies))


def settings(problems: list[str]) -> list[str]:
    return [line.split(":", 1)[0] for line in problems]


def test_hardened_config_has_no_problem() -> None:
    assert production_problems(hardened(), **FINE) == []
    check_production(hardened(), **FINE)


def test_development_mode_is_never_refused() -> None:
    config = make_config(secret="short", audience=None)
    assert config.mode == "development"
    assert production_problems(config, tls_enabled=False, audit_enabled=False) == []


def test_neither_tls_nor_trusted_proxy() -> None:
    problems = production_problems(hardened(), tls_enabled=False, audit_enabled=True)
    assert settings(problems) == ["tls.cert_file"]
    assert "trusted_proxies" in problems[0]


def test_trusted_proxy_stands_in_for_tls() -> None:
    config = with_proxies(hardened(), "10.0.0.0/8")
    assert production_problems(config, tls_enabled=False, audit_enabled=True) == []
    empty = with_proxies(hardened(), *())
    assert settings(production_problems(empty, tls_enabled=False, audit_enabled=True)) == [
        "tls.cert_file"
    ]


def test_short_hmac_secret() -> None:
    config = hardened(jwt=JwtConfig(secret="x" * 31, audience=AUDIENCE))
    assert production_problems(config, **FINE) == [
        "jwt.secret: must be at least 32 bytes in production"
    ]
    assert (
        production_problems(hardened(jwt=JwtConfig(secret="x" * 32, audience=AUDIENCE)), **FINE)
        == []
    )


def test_short_secret_counts_bytes_not_characters() -> None:
    config = hardened(jwt=JwtConfig(secret="é" * 16, audience=AUDIENCE))  # 32 bytes
    assert production_problems(config, **FINE) == []


def test_public_key_algorithms_need_no_secret() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    config = hardened(jwt=JwtConfig(algorithms=("ES256",), public_key=pem, audience=AUDIENCE))
    assert production_problems(config, **FINE) == []


def test_empty_origin_allow_list() -> None:
    problems = production_problems(hardened(origins=OriginConfig()), **FINE)
    assert problems == ["origins.allowed: must list the allowed origins in production"]


def test_wildcard_origin() -> None:
    # OriginConfig refuses "*" itself; production checks again in case that changes.
    origins = object.__new__(OriginConfig)
    object.__setattr__(origins, "allowed", ("https://app.example", "*"))
    problems = production_problems(hardened(origins=origins), **FINE)
    assert problems == ["origins.allowed: must not hold a wildcard in production"]


def test_query_token_source() -> None:
    config = hardened(credentials=CredentialsConfig(query_token=True))
    assert settings(production_problems(config, **FINE)) == ["credentials.query_token"]


def test_audience_not_checked() -> None:
    config = hardened(jwt=dataclasses.replace(make_config().jwt, audience=None))
    assert production_problems(config, **FINE) == ["jwt.audience: must be set in production"]


def test_audit_log_off() -> None:
    problems = production_problems(hardened(), tls_enabled=True, audit_enabled=False)
    assert settings(problems) == ["audit"]


def test_every_problem_is_reported_and_the_first_raised() -> None:
    config = hardened(
        jwt=JwtConfig(secret="short"),
        origins=OriginConfig(),
        credentials=CredentialsConfig(query_token=True),
    )
    problems = production_problems(config, tls_enabled=False, audit_enabled=False)
    assert settings(problems) == [
        "tls.cert_file",
        "jwt.secret",
        "origins.allowed",
        "credentials.query_token",
        "jwt.audience",
        "audit",
    ]
    assert all("\n" not in line for line in problems)
    with pytest.raises(ConfigurationError) as info:
        check_production(config, tls_enabled=False, audit_enabled=False)
    assert str(info.value) == problems[0]
    assert info.value.setting == "tls.cert_file"


def test_security_headers() -> None:
    assert (
        "Strict-Transport-Security",
        "max-age=63072000; includeSubDomains",
    ) in SECURITY_HEADERS_PRODUCTION
    assert security_headers(hardened()) == SECURITY_HEADERS_PRODUCTION
    development = dict(security_headers(make_config()))
    assert "Strict-Transport-Security" not in development
    assert development["X-Content-Type-Options"] == "nosniff"
    assert development["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Forwarded-Proto", "https")],
        [("x-forwarded-proto", "HTTPS")],
        [("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "https")],
        [("X-Forwarded-Proto", "http, https")],
    ],
)
def test_forwarded_https_from_trusted_proxy(headers: list[tuple[str, str]]) -> None:
    assert forwarded_proto_is_https(True, headers)


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("X-Forwarded-Proto", "http")],
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
        [("X-Forwarded-Proto", "https, http")],
        [("X-Forwarded-Proto", "")],
        [("X-Forwarded-Protocol", "https")],
        [("Forwarded", "proto=https")],
    ],
)
def test_forwarded_not_https_from_trusted_proxy(headers: list[tuple[str, str]]) -> None:
    assert not forwarded_proto_is_https(True, headers)


def test_forwarded_https_from_untrusted_peer_is_ignored() -> None:
    assert not forwarded_proto_is_https(False, [("X-Forwarded-Proto", "https")])
