"""The guard: registered message types plus the handshake and message policies.

Build one per application from a :class:`~wsguard.config.GuardConfig`, register
message types on it, and hand it to an adapter. The guard does no I/O: the
adapter feeds it handshakes and frames and carries out its decisions, and it
hands audit events to whatever sink the adapter installed.

Theory of operation of the handshake (PROTOCOL.md section 1), cheapest first:
block list and bans (403), attempt budget per IP (429), production without TLS
(426), Origin (403), open connections per IP and in total (429/503), the
credential (401), sessions per user (429, or evict the oldest with 4409).
Clients in ``exempt_ips`` skip the per-IP steps only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import msgspec

from wsguard.audit.events import AuditEvent, Severity
from wsguard.config import GuardConfig
from wsguard.core.anomaly import AnomalyEvent, CredentialStuffingDetector, IpScores
from wsguard.core.auth import Claims, TokenVerifier
from wsguard.core.bans import Ban, BanList
from wsguard.core.client_ip import ClientIdentity
from wsguard.core.clock import Clock, SystemClock
from wsguard.core.connection import ConnectionPolicy
from wsguard.core.decisions import Accept, HandshakeDecision, HandshakeRequest, Reject
from wsguard.core.envelope import EnvelopeDecoder
from wsguard.core.frames import PROTOCOL_VERSION, encode_frame
from wsguard.core.handshake import (
    REJECT_BODIES,
    check_origin,
    extract_credential,
    unverified_subject,
)
from wsguard.core.ratelimit import ConnectionCounter, SlidingCounter, UserBuckets
from wsguard.core.registry import SessionRegistry
from wsguard.core.revocation import Revocations
from wsguard.core.sanitize import HtmlCleaner, make_dec_hook
from wsguard.core.session import Session, new_session_secrets
from wsguard.core.signatures import SignatureScanner
from wsguard.core.tickets import TicketStore
from wsguard.core.types import (
    AckPayload,
    EmptyPayload,
    Handler,
    MessageType,
    TokenRefreshPayload,
    make_message_type,
)
from wsguard.exceptions import AuthenticationFailed, ConfigurationError, PolicyViolation
from wsguard.metrics import Metrics
from wsguard.production import forwarded_proto_is_https
from wsguard.typing import SessionId, UserId

H = TypeVar("H", bound=Handler)
Hook = Callable[[Any], Awaitable[None]]
AuditSink = Callable[[AuditEvent], None]

CORE_ANSWERED_TYPES = ("health-check", "token_refresh", "ack")
MAX_TRACKED_IPS = 100_000  # attempt counters kept before a prune
# How long a user revocation is kept (tokens without a jti have no expiry of their
# own to wait for): the longest lifetime `wsguard token` issues.
MAX_TOKEN_LIFETIME_S = 30 * 86_400.0


class Guard:
    """Holds the policy and the per-process security state of one endpoint.

    Args:
        config: the validated configuration.
        clock: the time source; the system clock unless a test injects one.
        html_cleaner: the HTML cleaner for ``Html`` fields; a safe default.
        metrics: where counters go; a private registry by default.

    Example::

        guard = Guard(config)

        @guard.message("chat", schema=ChatPayload, roles={"user"})
        async def chat(ctx, message):
            await ctx.reply(message, "chat", {"text": message.payload.text})
    """

    def __init__(
        self,
        config: GuardConfig,
        *,
        clock: Clock | None = None,
        html_cleaner: HtmlCleaner | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.verifier = TokenVerifier(config.jwt, self.clock)
        self.metrics = metrics or Metrics()
        # Gauges of live state are set when scraped, not on every connection.
        self.metrics.on_scrape(self._report_gauges)
        self._decoder = EnvelopeDecoder(config.messages)
        self._dec_hook = make_dec_hook(html_cleaner or HtmlCleaner())
        self._allowed_origins = config.allowed_origins()
        # With cookie auth a missing Origin is refused too (PROTOCOL.md section 1, step 4).
        self._origin_required = config.origins.require or bool(config.credentials.cookie)
        self.identity = ClientIdentity(config.network)
        self.bans = BanList(config.bans)
        self.connections = ConnectionCounter(
            config.rate_limits.max_connections_per_ip, config.rate_limits.max_connections_total
        )
        self.user_buckets = UserBuckets(config.rate_limits)
        self.ip_scores = IpScores(config.anomaly)
        self.stuffing = CredentialStuffingDetector(config.anomaly)
        self.sessions = SessionRegistry(config.sessions)
        self.revocations = Revocations(leeway=config.jwt.leeway)
        self.tickets = TicketStore()
        self.signatures = SignatureScanner() if config.signatures.enabled else None
        self._attempts: dict[str, SlidingCounter] = {}
        self._audit_sinks: list[AuditSink] = []
        self.ban_listeners: list[Callable[[str, str], object]] = []
        """Called with ``(kind, key)`` on every ban; the adapter closes what it covers."""
        self.shutting_down = False
        self.types: dict[str, MessageType] = {}
        self.type_limits: dict[str, tuple[float, float, int]] = {}
        self.connect_hooks: list[Hook] = []
        self.disconnect_hooks: list[Hook] = []
        # Built-in types the core answers itself; an application may replace them.
        self.register("health-check", EmptyPayload)
        self.register("token_refresh", TokenRefreshPayload)
        self.register("ack", AckPayload)

    # Registration.

    def register(
        self,
        name: str,
        schema: type[msgspec.Struct],
        handler: Handler | None = None,
        *,
        roles: Iterable[str] = (),
        csrf_exempt: bool | None = None,
        rate_limit: tuple[float, float, int] | None = None,
    ) -> MessageType:
        """Register (or replace) a message type.

        Args:
            name: the envelope ``type``.
            schema: a frozen msgspec Struct for the payload.
            handler: ``async def handler(ctx, message)``; None for core-answered types.
            roles: roles allowed to send it; empty allows every authenticated user.
            csrf_exempt: whether it may omit ``csrfToken``; defaults to the config's list.
            rate_limit: ``(rate, window_seconds, burst)`` for this type on each
                connection, e.g. ``(5, 60, 5)`` for five a minute.

        Raises:
            ConfigurationError: for a bad name, schema or rate limit.
        """
        exempt = name in self.config.messages.csrf_exempt if csrf_exempt is None else csrf_exempt
        message_type = make_message_type(name, schema, roles, handler, exempt)
        if rate_limit is not None:
            rate, window, burst = rate_limit
            if rate <= 0 or window <= 0 or burst < 1:
                raise ConfigurationError(f"message type {name!r}", "rate_limit must be positive")
            self.type_limits[name] = rate_limit
        self.types[name] = message_type
        return message_type

    def message(
        self,
        name: str,
        *,
        schema: type[msgspec.Struct] = EmptyPayload,
        roles: Iterable[str] = (),
        csrf_exempt: bool | None = None,
        rate_limit: tuple[float, float, int] | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`register`."""

        def decorator(handler: H) -> H:
            self.register(
                name, schema, handler, roles=roles, csrf_exempt=csrf_exempt, rate_limit=rate_limit
            )
            return handler

        return decorator

    def on_connect(self, hook: Hook) -> Hook:
        """Run ``await hook(ctx)`` after the welcome frame is sent."""
        self.connect_hooks.append(hook)
        return hook

    def on_disconnect(self, hook: Hook) -> Hook:
        """Run ``await hook(ctx)`` when the connection ends, whatever the reason."""
        self.disconnect_hooks.append(hook)
        return hook

    # Audit.

    def add_audit_sink(self, sink: AuditSink) -> None:
        """Send every audit event to ``sink`` too (it must not block)."""
        self._audit_sinks.append(sink)

    def audit(
        self,
        event: str,
        severity: Severity = "info",
        *,
        session: Session | None = None,
        client_ip: str | None = None,
        user: str | None = None,
        request_id: str | None = None,
        **details: str | int | float | bool | None,
    ) -> None:
        """Record a security event. Never pass a token, CSRF token, secret or payload."""
        if not self._audit_sinks:
            return
        # Positional: a frozen dataclass's keyword call costs a third more.
        entry = AuditEvent(
            event,
            severity,
            self.clock.now(),
            request_id,
            session.id if session else None,
            user if user is not None else (session.user if session else None),
            client_ip if client_ip is not None else (session.peer if session else None),
            details,
        )
        for sink in self._audit_sinks:
            sink(entry)

    # Bans.

    def ban(self, kind: str, key: str, reason: str, duration: float | None = None) -> Ban:
        """Ban an IP (``kind="ip"``, by its rate key) or a user; repeated bans escalate."""
        ban = self.bans.ban(kind, key, self.clock.now(), reason, duration)
        self.metrics.bans_total.labels(kind=kind).inc()
        for listener in self.ban_listeners:
            listener(kind, key)
        self.audit(
            "ban_added",
            "warning",
            client_ip=key if kind == "ip" else None,
            user=key if kind == "user" else None,
            kind=kind,
            reason=reason,
            seconds=round(ban.until - self.clock.now(), 3),
        )
        return ban

    def unban(self, kind: str, key: str) -> bool:
        removed = self.bans.unban(kind, key)
        if removed:
            self.audit("ban_removed", "info", kind=kind, target=key)
        return removed

    # The handshake.

    def handshake(
        self, request: HandshakeRequest, *, reputation_bad: bool = False
    ) -> HandshakeDecision:
        """Decide on an opening handshake.

        Args:
            request: the handshake as plain data.
            reputation_bad: the adapter's answer from the reputation provider.

        Returns:
            :class:`Accept` with the connection's policy and welcome frame, or
            :class:`Reject` with a plain HTTP response to send instead.
        """
        decision = self._handshake(request, reputation_bad)
        if isinstance(decision, Reject):
            self.metrics.handshake_refusals_total.labels(reason=decision.label).inc()
            self.audit(
                "handshake_refused",
                "warning",
                client_ip=decision.client_ip or request.peer,
                status=decision.status,
                reason=decision.reason,
            )
        return decision

    def _reject(self, status: int, reason: str, label: str, ip: str, **kw: Any) -> Reject:
        return Reject(status, REJECT_BODIES[status], reason, label=label, client_ip=ip, **kw)

    def _handshake(self, request: HandshakeRequest, reputation_bad: bool) -> HandshakeDecision:
        now = self.clock.now()
        ip = self.identity.client_ip(request.peer, request.headers)
        if request.path != self.config.server.path:
            return self._reject(404, "unknown path", "path", ip)
        key = self.identity.rate_key(ip)
        exempt = self.identity.is_exempt(ip)
        limits = self.config.rate_limits
        if not exempt:
            if self.bans.banned("ip", key, now) is not None:
                return self._reject(403, "IP banned", "banned", ip)
            if reputation_bad:
                return self._reject(403, "IP on block list", "blocklist", ip)
            retry = self._attempt(key, now)
            if retry > 0:
                self.metrics.rate_limit_hits_total.labels(scope="handshake").inc()
                return self._reject(
                    429, "handshake attempts over budget", "attempts", ip,
                    headers=(("Retry-After", str(max(1, int(retry + 0.999)))),),
                )  # fmt: skip
        if self.config.mode == "production" and not request.tls:
            trusted = self.identity.is_trusted_proxy(request.peer)
            if not forwarded_proto_is_https(trusted, request.headers):
                return self._reject(426, "plain ws:// in production", "tls", ip)
        try:
            check_origin(request, self._allowed_origins, self._origin_required)
        except PolicyViolation as exc:
            return self._reject(exc.http_status, exc.reason, "origin", ip)
        if self.connections.total >= limits.max_connections_total:
            return self._reject(503, "connection cap", "capacity", ip)
        if not exempt and self.connections.count(key) >= limits.max_connections_per_ip:
            return self._reject(429, "connections per IP at cap", "ip_connections", ip)
        try:
            claims, subprotocol = self._authenticate(request, now)
        except AuthenticationFailed as exc:
            self._auth_failed(request, key, ip, exempt, now)
            return self._reject(401, exc.reason, "auth", ip)
        if self.bans.banned("user", claims.subject, now) is not None:
            return self._reject(403, "user banned", "banned", ip)
        if not exempt:
            self.stuffing.success(key, claims.subject, now)
        allowed, evict = self.sessions.admit(claims.subject, now)
        if not allowed:
            return self._reject(429, "sessions per user at cap", "user_sessions", ip)
        session_id, csrf_token = new_session_secrets()
        session = Session(
            id=session_id,
            user=UserId(claims.subject),
            roles=claims.roles,
            peer=ip,
            user_agent=request.header("user-agent"),
            created_at=now,
            expires_at=claims.expires_at,
            issued_at=claims.issued_at,
            token_id=claims.token_id,
            csrf_token=csrf_token,
        )
        policy = ConnectionPolicy(guard=self, session=session, rate_key=key, exempt=exempt)
        self.audit("auth_succeeded", session=session)
        return Accept(policy, subprotocol, self.welcome_frame(session), evict)

    def charge_attempt(self, peer: str) -> bool:
        """Spend one of ``peer``'s attempts (a failed admin login); True when over budget."""
        if self.identity.is_exempt(peer):
            return False
        return self._attempt(self.identity.rate_key(peer), self.clock.now()) > 0

    def attempts_exhausted(self, key: str) -> bool:
        """Whether ``key`` is out of handshake attempts, without spending one."""
        counter = self._attempts.get(key)
        return counter is not None and counter.count(self.clock.now()) >= (
            self.config.rate_limits.handshake_attempts
        )

    def handshake_dropped(self, peer: str) -> None:
        """A connection closed before its handshake request: count it and charge its IP."""
        self.metrics.handshake_refusals_total.labels(reason="timeout").inc()
        if not self.identity.is_exempt(peer):
            self._attempt(self.identity.rate_key(peer), self.clock.now())

    def _attempt(self, key: str, now: float) -> float:
        counter = self._attempts.get(key)
        if counter is None:
            if len(self._attempts) >= MAX_TRACKED_IPS:
                self._prune_attempts(now)
            limits = self.config.rate_limits
            counter = self._attempts[key] = SlidingCounter(
                limits.handshake_attempts, limits.handshake_window
            )
        return counter.hit(now)

    def _prune_attempts(self, now: float) -> None:
        for key in [k for k, counter in self._attempts.items() if counter.is_idle(now)]:
            del self._attempts[key]
        if len(self._attempts) >= MAX_TRACKED_IPS:
            # A flood of distinct busy IPs: start over rather than grow without bound.
            self._attempts.clear()

    def _authenticate(self, request: HandshakeRequest, now: float) -> tuple[Claims, str | None]:
        kind, credential, subprotocol = extract_credential(request, self.config.credentials)
        if kind == "ticket":
            claims = self.tickets.redeem(credential, now)
            if claims is None:
                raise AuthenticationFailed("unknown, used or expired ticket")
        else:
            claims = self.verifier.verify(credential)
        if self.revocations.is_revoked(claims, now):
            raise AuthenticationFailed("token revoked")
        return claims, subprotocol

    def _auth_failed(
        self, request: HandshakeRequest, key: str, ip: str, exempt: bool, now: float
    ) -> None:
        self.audit("auth_failed", "warning", client_ip=ip, stage="handshake")
        if exempt:
            return
        self.ip_scores.record(key, AnomalyEvent.AUTH_FAILURE, now)
        subject = unverified_subject(request, self.config.credentials)
        if self.stuffing.failure(key, subject, now):
            self.audit("credential_stuffing_suspected", "critical", client_ip=ip)
            self.ban("ip", key, "credential stuffing")
        elif self.ip_scores.level(key, now) == "disconnect":
            self.audit("anomaly_disconnect", "critical", client_ip=ip, reason="IP anomaly score")
            self.ban("ip", key, "IP anomaly score")

    # Sessions.

    def _report_gauges(self) -> None:
        self.metrics.connections_open.set(self.sessions.count())
        self.metrics.sessions_users_at_limit.set(self.sessions.users_at_limit())

    def open_session(self, policy: ConnectionPolicy, handle: object) -> bool:
        """Count an accepted connection; pairs with :meth:`close_session`.

        Call it right after :meth:`handshake` accepted, with no pause between,
        so that concurrent handshakes cannot overshoot the caps.

        Returns:
            False when a cap is full after all (the adapter refuses with 503 and
            must not call :meth:`close_session`).
        """
        if self.connections.try_open(policy.rate_key, exempt=policy.exempt):
            policy.release()
            return False
        self.sessions.add(policy.session, handle)
        self.metrics.connections_total.inc()
        return True

    def close_session(self, policy: ConnectionPolicy) -> None:
        """Forget everything about a connection that ended; pairs with :meth:`open_session`."""
        self.connections.close(policy.rate_key)
        self.sessions.remove(policy.session.id)
        policy.release()

    def revoke_session(self, session: Session) -> None:
        """Make the session's token unusable until it would have expired (revival prevention)."""
        now = self.clock.now()
        if session.token_id:
            self.revocations.revoke_token(session.token_id, session.expires_at)
        else:
            self.revocations.revoke_user(session.user, now, now + MAX_TOKEN_LIFETIME_S)

    def revoke_user(self, user: str) -> None:
        """Refuse every token of ``user`` issued up to now."""
        now = self.clock.now()
        self.revocations.revoke_user(user, now, now + MAX_TOKEN_LIFETIME_S)

    def issue_ticket(self, token: str) -> str:
        """Verify ``token`` and trade it for a one-time ticket (``POST /auth/ticket``).

        Raises:
            AuthenticationFailed: the token does not verify or is revoked.
        """
        now = self.clock.now()
        claims = self.verifier.verify(token)
        if self.revocations.is_revoked(claims, now):
            raise AuthenticationFailed("token revoked")
        return self.tickets.issue(claims, now)

    def welcome_frame(self, session: Session) -> bytes:
        """The first frame of a session (PROTOCOL.md section 3)."""
        return encode_frame(
            "welcome",
            {
                "sessionId": session.id,
                "csrfToken": session.csrf_token,
                "expiresAt": int(session.expires_at * 1000),
                "heartbeatIntervalMs": int(self.config.server.ping_interval * 1000),
                "maxMessageBytes": self.config.messages.max_message_bytes,
                "protocol": PROTOCOL_VERSION,
            },
        )

    def find_session(self, session_id: str) -> tuple[Session, object] | None:
        return self.sessions.get(SessionId(session_id))


def check_handlers(guard: Guard) -> None:
    """Refuse to serve a type registered with no handler that the core cannot answer.

    Raises:
        ConfigurationError: naming the type.
    """
    for name, message_type in guard.types.items():
        if message_type.handler is None and name not in CORE_ANSWERED_TYPES:
            raise ConfigurationError(f"message type {name!r}", "registered without a handler")
