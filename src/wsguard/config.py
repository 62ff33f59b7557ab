"""Typed configuration with secure defaults.

One frozen dataclass per policy, combined in :class:`GuardConfig`. Each checks
itself in ``__post_init__`` and raises :exc:`ConfigurationError` naming the
setting, so that a bad config stops the start with one line.

The TOML file mirrors the dataclasses: top-level keys for :class:`GuardConfig`'s
plain fields, one table per section (``[server]``, ``[jwt]``, ``[credentials]``,
``[origins]``, ``[messages]``). Every setting can also come from the environment:
``WSGUARD_<KEY>`` for a top-level key, ``WSGUARD_<SECTION>_<KEY>`` for a section's
(``WSGUARD_JWT_SECRET``, ``WSGUARD_SERVER_PORT``); lists are comma-separated.
The environment wins over the file. Only :func:`load_config` reads files or the
environment, and only the CLI calls it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from wsguard.audit.config import AuditConfig
from wsguard.core.anomaly import AnomalyConfig
from wsguard.core.bans import BanConfig
from wsguard.core.client_ip import NetworkConfig
from wsguard.core.ratelimit import RateLimitConfig
from wsguard.core.registry import SessionConfig
from wsguard.core.signatures import SignatureConfig
from wsguard.exceptions import ConfigurationError
from wsguard.reputation import ReputationConfig

Mode = Literal["development", "production"]

SUPPORTED_ALGORITHMS = frozenset(
    {
        "HS256", "HS384", "HS512",
        "RS256", "RS384", "RS512",
        "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512",
        "EdDSA",
    }
)  # fmt: skip
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
MAX_LEEWAY_S = 60.0


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Where and how the server listens.

    Attributes:
        host: interface to bind.
        port: TCP port; 0 picks a free one.
        path: URL path of the WebSocket endpoint; other paths get 404.
        open_timeout: seconds a client has to complete the opening handshake.
        compression: offer permessage-deflate; the inflated size stays bounded.
        ping_interval: seconds between server pings.
        ping_timeout: seconds to wait for a pong before closing.
        close_timeout: seconds to wait for the closing handshake.
        shutdown_timeout: seconds a SIGTERM/SIGINT shutdown may take.
        http_port: port of the HTTP API (tickets, admin, health, metrics); None: off.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    path: str = "/ws"
    open_timeout: float = 10.0
    compression: bool = False
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 10.0
    shutdown_timeout: float = 10.0
    http_port: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigurationError("server.port", "must be between 0 and 65535")
        if self.http_port is not None and not 0 <= self.http_port <= 65535:
            raise ConfigurationError("server.http_port", "must be between 0 and 65535")
        if not self.path.startswith("/"):
            raise ConfigurationError("server.path", "must start with '/'")
        for name in (
            "open_timeout",
            "ping_interval",
            "ping_timeout",
            "close_timeout",
            "shutdown_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"server.{name}", "must be a positive number of seconds")


@dataclass(frozen=True, kw_only=True)
class JwtConfig:
    """How tokens are verified.

    Attributes:
        algorithms: the allow list; ``none`` is never accepted, and HMAC and
            public-key algorithms cannot be mixed (key confusion).
        secret: the HMAC secret, for HS* algorithms.
        public_key: a PEM public key, for RS*/PS*/ES*/EdDSA algorithms.
        public_key_file: a file holding that PEM key (read by :func:`load_config`).
        issuer: when set, the ``iss`` claim must equal it.
        audience: when set, the ``aud`` claim must contain it.
        leeway: seconds of clock skew tolerated on ``exp``/``nbf``/``iat``; at most 60.
        roles_claim: the claim holding the list of role names.
    """

    algorithms: tuple[str, ...] = ("HS256",)
    secret: str | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)
    public_key_file: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 0.0
    roles_claim: str = "roles"

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ConfigurationError("jwt.algorithms", "must list at least one algorithm")
        for alg in self.algorithms:
            if alg.lower() == "none":
                raise ConfigurationError("jwt.algorithms", "'none' is never accepted")
            if alg not in SUPPORTED_ALGORITHMS:
                raise ConfigurationError("jwt.algorithms", f"unsupported algorithm {alg!r}")
        hmac_algs = HMAC_ALGORITHMS.intersection(self.algorithms)
        if hmac_algs and len(hmac_algs) != len(self.algorithms):
            raise ConfigurationError(
                "jwt.algorithms", "cannot mix HMAC and public-key algorithms (key confusion)"
            )
        if hmac_algs and not self.secret:
            raise ConfigurationError("jwt.secret", "required for HS* algorithms")
        if not hmac_algs and not self.public_key:
            raise ConfigurationError("jwt.public_key", "a PEM public key is required")
        if not 0 <= self.leeway <= MAX_LEEWAY_S:
            raise ConfigurationError("jwt.leeway", "must be between 0 and 60 seconds")
        if not self.roles_claim:
            raise ConfigurationError("jwt.roles_claim", "must not be empty")

    @property
    def uses_hmac(self) -> bool:
        return self.algorithms[0] in HMAC_ALGORITHMS


@dataclass(frozen=True, kw_only=True)
class CredentialsConfig:
    """Which token sources the handshake accepts.

    Attributes:
        bearer_header: ``Authorization: Bearer <jwt>``.
        subprotocol: ``wsguard.v1`` with ``wsguard.bearer.<jwt>``.
        ticket: one-time ``?ticket=`` from ``POST /auth/ticket``.
        cookie: the name of a cookie holding the JWT; only with a non-empty
            Origin allow list, and Origin is then always required.
        query_token: ``?token=<jwt>``; off by default since URLs leak into logs.
    """

    bearer_header: bool = True
    subprotocol: bool = True
    ticket: bool = True
    cookie: str | None = None
    query_token: bool = False

    def __post_init__(self) -> None:
        if self.cookie is not None and not self.cookie.strip():
            raise ConfigurationError("credentials.cookie", "must be a cookie name")
        if not (self.bearer_header or self.subprotocol or self.query_token or self.ticket):
            raise ConfigurationError("credentials", "at least one token source must be on")


@dataclass(frozen=True, kw_only=True)
class OriginConfig:
    """The Cross-Site WebSocket Hijacking defence.

    Attributes:
        allowed: exact origins (``scheme://host[:port]``) allowed to connect.
        require: refuse a handshake with no ``Origin`` header at all.
    """

    allowed: tuple[str, ...] = ()
    require: bool = False

    def __post_init__(self) -> None:
        for origin in self.allowed:
            if normalize_origin(origin) is None:
                raise ConfigurationError(
                    "origins.allowed", f"{origin!r} is not scheme://host[:port]"
                )


@dataclass(frozen=True, kw_only=True)
class MessageConfig:
    """Limits on client messages.

    Attributes:
        max_message_bytes: largest message accepted, after inflating; bigger closes 1009.
        max_depth: deepest nesting of objects and arrays in a message.
        max_clock_skew: seconds a message ``timestamp`` may differ from server time.
        csrf_exempt: message types that need no ``csrfToken``.
    """

    max_message_bytes: int = 65536
    max_depth: int = 32
    max_clock_skew: float = 300.0
    csrf_exempt: tuple[str, ...] = ("health-check", "token_refresh", "ack")

    def __post_init__(self) -> None:
        if not 128 <= self.max_message_bytes <= 16 * 2**20:
            raise ConfigurationError(
                "messages.max_message_bytes", "must be between 128 and 16777216"
            )
        if not 1 <= self.max_depth <= 256:
            raise ConfigurationError("messages.max_depth", "must be between 1 and 256")
        if self.max_clock_skew <= 0:
            raise ConfigurationError("messages.max_clock_skew", "must be positive")


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """TLS for ``wss://`` (see docs/tls.md for the exact settings).

    Attributes:
        cert_file: PEM certificate chain; TLS is on when set.
        key_file: PEM private key.
    """

    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigurationError("tls", "cert_file and key_file go together")

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True, kw_only=True)
class GuardConfig:
    """Everything the guard needs, with secure defaults.

    Attributes:
        mode: ``development`` or ``production``.
        server: see :class:`ServerConfig`.
        jwt: see :class:`JwtConfig`.
        credentials: see :class:`CredentialsConfig`.
        origins: see :class:`OriginConfig`.
        messages: see :class:`MessageConfig`.
        admin_token: the admin API credential (a bearer token); the API is off without it.
        audit_key: the audit log's HMAC key; development mode makes one beside the log.
        tls, network, rate_limits, bans, anomaly, signatures, reputation, sessions, audit:
            the other policies; ``network``'s settings are top-level keys.
    """

    mode: Mode = "development"
    admin_token: str | None = field(default=None, repr=False)
    audit_key: str | None = field(default=None, repr=False)
    server: ServerConfig = field(default_factory=ServerConfig)
    jwt: JwtConfig
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    origins: OriginConfig = field(default_factory=OriginConfig)
    messages: MessageConfig = field(default_factory=MessageConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    rate_limits: RateLimitConfig = field(default_factory=RateLimitConfig)
    bans: BanConfig = field(default_factory=BanConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    signatures: SignatureConfig = field(default_factory=SignatureConfig)
    reputation: ReputationConfig = field(default_factory=ReputationConfig)
    sessions: SessionConfig = field(default_factory=SessionConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def __post_init__(self) -> None:
        if self.mode not in ("development", "production"):
            raise ConfigurationError("mode", "must be 'development' or 'production'")
        if self.credentials.cookie and not self.origins.allowed:
            raise ConfigurationError(
                "credentials.cookie",
                "needs a non-empty origins.allowed (browsers send cookies cross-site)",
            )
        if self.admin_token is not None and len(self.admin_token) < 32:
            raise ConfigurationError("admin_token", "must be at least 32 characters")

    def allowed_origins(self) -> frozenset[str]:
        """The effective allow list, normalised; development adds the local origins."""
        origins = {normalize_origin(o) for o in self.origins.allowed}
        if self.credentials.cookie:  # cookie auth: only the listed origins, never dev extras
            return frozenset(o for o in origins if o is not None)
        if self.mode == "development":
            port = self.server.port
            origins.add(f"http://localhost:{port}")
            origins.add(f"http://127.0.0.1:{port}")
        return frozenset(o for o in origins if o is not None)


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@functools.lru_cache(maxsize=1024)  # browsers send the same few origins over and over
def normalize_origin(origin: str) -> str | None:
    """``scheme://host:port`` in lower case with the port explicit, or None if malformed.

    Comparing the normalised forms compares scheme, host and port exactly, so that
    ``https://a.example`` and ``https://a.example:443`` are one origin and
    ``http://a.example`` is another.
    """
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    if "*" in origin:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


# Loading from TOML and the environment.

_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "jwt": JwtConfig,
    "credentials": CredentialsConfig,
    "origins": OriginConfig,
    "messages": MessageConfig,
    "tls": TlsConfig,
    "rate_limits": RateLimitConfig,
    "bans": BanConfig,
    "anomaly": AnomalyConfig,
    "signatures": SignatureConfig,
    "reputation": ReputationConfig,
    "sessions": SessionConfig,
    "audit": AuditConfig,
}
# Sections whose settings are written as top-level keys (WSGUARD_EXEMPT_IPS).
_FLAT_SECTIONS: dict[str, type[Any]] = {"network": NetworkConfig}
_TOP_LEVEL = ("mode", "admin_token", "audit_key")
ENV_PREFIX = "WSGUARD_"


def env_name(section: str | None, key: str) -> str:
    """The environment variable that sets ``section.key`` (or a top-level ``key``)."""
    parts = [section, key] if section else [key]
    return ENV_PREFIX + "_".join(parts).upper()


def _coerce(setting: str, kind: Any, value: Any, from_env: bool) -> Any:
    """Turn a TOML or environment value into the field's type, or raise."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (from_env and value == ""):
            return None
        return _coerce(setting, options[0], value, from_env)
    if origin is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise ConfigurationError(setting, f"must be one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (Mapping, dict) or kind is Mapping:
        if from_env:  # "name=1.5,other=2"
            pairs = [item.partition("=") for item in str(value).split(",") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ConfigurationError(setting, "must be name=value pairs")
            value = {k.strip(): v.strip() for k, _, v in pairs}
        if not isinstance(value, Mapping):
            raise ConfigurationError(setting, "must be a table")
        args = typing.get_args(kind)
        item_kind = args[1] if len(args) == 2 else str
        return {str(k): _coerce(f"{setting}.{k}", item_kind, v, from_env) for k, v in value.items()}
    if origin is tuple:
        if from_env:
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(setting, "must be a list of strings")
        return tuple(value)
    if kind is bool:
        if from_env:
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigurationError(setting, "must be true or false")
        return value
    if kind is int:
        if from_env:
            try:
                value = int(value)
            except ValueError:
                raise ConfigurationError(setting, "must be an integer") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(setting, "must be an integer")
        return value
    if kind is float:
        if from_env:
            try:
                value = float(value)
            except ValueError:
                raise ConfigurationError(setting, "must be a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(setting, "must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigurationError(setting, "must be a string")
        return value
    raise AssertionError(f"unhandled config type {kind!r}")  # a wsguard bug


def _build_section(
    name: str | None, cls: type[Any], table: Mapping[str, Any], env: Mapping[str, str]
) -> Any:
    """Build one section; ``name`` None for a flat section (top-level keys)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigurationError(f"{name}.{key}", "unknown setting")
    values: dict[str, Any] = {}
    for key in known:
        setting = f"{name}.{key}" if name else key
        variable = env_name(name, key)
        if env.get(variable, "") != "":  # an empty variable counts as unset
            values[key] = _coerce(setting, hints[key], env[variable], from_env=True)
        elif key in table:
            values[key] = _coerce(setting, hints[key], table[key], from_env=False)
    return cls(**values)


def config_from_mapping(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> GuardConfig:
    """Build a :class:`GuardConfig` from parsed TOML and environment variables.

    Raises:
        ConfigurationError: naming the first bad setting.
    """
    env = env or {}
    known_variables = set(all_env_names())
    for variable in sorted(env):
        if variable.startswith(ENV_PREFIX) and variable not in known_variables:
            raise ConfigurationError(variable, "unknown WSGUARD_* variable (a typo?)")
    flat_keys = {f.name for cls in _FLAT_SECTIONS.values() for f in dataclasses.fields(cls)}
    for key in data:
        if key not in _SECTIONS and key not in _TOP_LEVEL and key not in flat_keys:
            raise ConfigurationError(key, "unknown setting")
    hints = typing.get_type_hints(GuardConfig)
    top: dict[str, Any] = {}
    for key in _TOP_LEVEL:
        variable = env_name(None, key)
        if env.get(variable, "") != "":  # an empty variable counts as unset
            top[key] = _coerce(key, hints[key], env[variable], from_env=True)
        elif key in data:
            top[key] = _coerce(key, hints[key], data[key], from_env=False)
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigurationError(name, "must be a table")
        if name == "jwt":
            table = _with_public_key_file(table, env)
        sections[name] = _build_section(name, cls, table, env)
    for name, cls in _FLAT_SECTIONS.items():
        own = {f.name for f in dataclasses.fields(cls)}
        sections[name] = _build_section(None, cls, {k: v for k, v in data.items() if k in own}, env)
    return GuardConfig(**top, **sections)


def _with_public_key_file(table: Mapping[str, Any], env: Mapping[str, str]) -> Mapping[str, Any]:
    path = env.get(env_name("jwt", "public_key_file"), table.get("public_key_file"))
    if not path or table.get("public_key") or env.get(env_name("jwt", "public_key")):
        return table
    try:
        pem = Path(str(path)).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError("jwt.public_key_file", f"cannot read: {exc.strerror}") from None
    return {**table, "public_key": pem}


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML config file.

    Raises:
        ConfigurationError: when the file is missing or not valid TOML.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigurationError(str(path), f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(str(path), f"invalid TOML: {exc}") from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GuardConfig:
    """Read the TOML file (if any), apply ``WSGUARD_*`` variables, then ``overrides``.

    Args:
        path: a TOML file, or None for defaults and environment only.
        env: the environment; defaults to ``os.environ``.
        overrides: ``{"section": {"key": value}}`` applied last (command-line flags).
    """
    data = read_toml(path) if path is not None else {}
    environment = dict(os.environ if env is None else env)
    for section, values in (overrides or {}).items():
        data[section] = {**data.get(section, {}), **values}
        for key in values:  # a flag beats the environment
            environment.pop(env_name(section, key), None)
    return config_from_mapping(data, environment)


def all_env_names() -> list[str]:
    """Every ``WSGUARD_*`` variable the config reads, for the docs and tests."""
    names = [env_name(None, key) for key in _TOP_LEVEL]
    for cls in _FLAT_SECTIONS.values():
        names.extend(env_name(None, f.name) for f in dataclasses.fields(cls))
    for section, cls in _SECTIONS.items():
        names.extend(env_name(section, f.name) for f in dataclasses.fields(cls))
    return names


def _public_view(value: Any) -> Any:
    """A config as plain data with every secret replaced by whether it is set."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        view: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            view[f.name] = (item is not None) if not f.repr else _public_view(item)
        return view
    if isinstance(value, Mapping):
        return {str(k): _public_view(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_public_view(v) for v in value]
    return value


def effective_config_hash(config: GuardConfig) -> str:
    """SHA-256 of the effective config without its secrets, for the audit log."""
    import hashlib
    import json

    text = json.dumps(_public_view(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
