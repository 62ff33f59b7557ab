"""The per-message policy of one connection (PROTOCOL.md section 4).

Theory of operation: the adapter feeds every frame to
:meth:`ConnectionPolicy.receive` and carries out the decision it returns. The
checks run in the protocol's order: session still valid; frame kind and size;
JSON and envelope; CSRF; role allowed for the type; payload schema with
sanitization; then the handler. Everything here is synchronous and in memory:
a connection lives on one process, so its state needs no lock and no store.
"""

from __future__ import annotations

import hmac
import math
import secrets
from typing import TYPE_CHECKING

import msgspec

from wsguard.core.anomaly import AnomalyEvent, AnomalyScorer, Level
from wsguard.core.decisions import Close, Deliver, Message, MessageDecision, Reply
from wsguard.core.envelope import EnvelopeError
from wsguard.core.errors import CLOSE_REASONS, CloseCode, ErrorCode
from wsguard.core.frames import encode_frame, error_frame
from wsguard.core.ratelimit import MessageLimiter
from wsguard.core.session import Session, new_csrf_token
from wsguard.core.types import TokenRefreshPayload
from wsguard.exceptions import AuthenticationFailed

if TYPE_CHECKING:
    from wsguard.core.guard import Guard

_new = tuple.__new__

_SCORED = {
    ErrorCode.INVALID_MESSAGE: AnomalyEvent.INVALID_MESSAGE,
    ErrorCode.INVALID_PAYLOAD: AnomalyEvent.INVALID_PAYLOAD,
    ErrorCode.UNKNOWN_TYPE: AnomalyEvent.UNKNOWN_TYPE,
    ErrorCode.CSRF_INVALID: AnomalyEvent.CSRF_FAILURE,
    ErrorCode.FORBIDDEN: AnomalyEvent.FORBIDDEN,
    ErrorCode.TOKEN_INVALID: AnomalyEvent.TOKEN_INVALID,
    ErrorCode.RATE_LIMITED: AnomalyEvent.RATE_LIMITED,
    # A restricted client that keeps sending what it may not send now keeps rising.
    ErrorCode.RESTRICTED: AnomalyEvent.FORBIDDEN,
}
_AUDITED = {
    ErrorCode.CSRF_INVALID: "csrf_failed",
    ErrorCode.FORBIDDEN: "forbidden",
    ErrorCode.TOKEN_INVALID: "token_refresh_refused",
}
_AT_PATH = " - at `"


def new_request_id() -> str:
    return secrets.token_hex(8)


def _validation_path(error: msgspec.ValidationError) -> str:
    """The field path of a msgspec error, relative to the envelope; never a value.

    msgspec ends its messages with `` - at `$.field` ``; an unknown field names the
    attacker's key, so only its parent is reported then.
    """
    text = str(error)
    at = text.rfind(_AT_PATH)
    inner = text[at + len(_AT_PATH) : -1] if at >= 0 else "$"
    path = "$.payload" + inner[1:]
    if text.startswith("Object missing required field `"):
        field = text[len("Object missing required field `") :].split("`", 1)[0]
        path = f"{path}.{field}"
    return path


class ConnectionPolicy:
    """Judges the frames of one connection.

    Made by :meth:`Guard.handshake`; the adapter calls :meth:`Guard.open_session`
    once the upgrade completed and :meth:`Guard.close_session` when it ends.

    Args:
        guard: the guard holding the shared policy and per-process state.
        session: the connection's session, made at the handshake.
        rate_key: the client's IP key for per-IP limits and bans.
        exempt: the client IP is in ``exempt_ips`` (no IP ban on abuse).
    """

    __slots__ = (
        "_clock",
        "_csrf_grace",
        "_dec_hook",
        "_decoder",
        "_expires_limit",
        "_guard",
        "_leeway",
        "_max_bytes",
        "_next_rate_audit",
        "_previous_csrf",
        "_previous_csrf_until",
        "_refuse_signatures",
        "_restricted",
        "_signatures",
        "_track_idle",
        "_types",
        "_user_bucket_held",
        "closed",
        "exempt",
        "limiter",
        "rate_key",
        "scorer",
        "session",
    )

    def __init__(self, *, guard: Guard, session: Session, rate_key: str, exempt: bool) -> None:
        config = guard.config
        now = guard.clock.now()
        self.session = session
        self.rate_key = rate_key
        self.exempt = exempt
        self._guard = guard
        self._types = guard.types
        self._decoder = guard._decoder
        self._dec_hook = guard._dec_hook
        self._clock = guard.clock
        self._max_bytes = config.messages.max_message_bytes
        self._signatures = guard.signatures
        self._refuse_signatures = config.signatures.action == "refuse"
        self._user_bucket_held = True
        self.limiter = MessageLimiter(
            config.rate_limits,
            guard.user_buckets.acquire(session.user, now),
            now,
            guard.type_limits,
        )
        # Made at the first scored event: most connections never score.
        self.scorer: AnomalyScorer | None = None
        self._csrf_grace = config.sessions.csrf_grace
        self._previous_csrf: str | None = None
        self._previous_csrf_until = 0.0
        self._next_rate_audit = 0.0
        self._restricted = False
        self._leeway = config.jwt.leeway
        self._track_idle = config.sessions.idle_timeout is not None
        self._expires_limit = session.expires_at + self._leeway
        self.closed = False

    # Public methods for receiving data.

    def receive(self, frame: str | bytes) -> MessageDecision:
        """Judge one frame from the client.

        Returns:
            :class:`Deliver` to run the type's handler, :class:`Reply` to send a
            frame back (an error, or the core's own answer), or :class:`Close`.
        """
        if self.closed:
            return Close(CloseCode.SESSION_TERMINATED, CLOSE_REASONS[CloseCode.SESSION_TERMINATED])
        now = self._clock.now()
        if now > self._expires_limit:
            # The tick closes expired sessions once a second; no message slips in between.
            return self._close(CloseCode.TOKEN_EXPIRED, "token expired")
        retry = self.limiter.check(now)
        if retry:
            # Refused before parsing: a flood costs a bucket lookup per frame.
            return self._rate_limited(retry, None, now)
        if not isinstance(frame, str):
            return self._close(CloseCode.UNSUPPORTED_DATA, "binary frame")
        if len(frame) > self._max_bytes // 4 and len(frame.encode()) > self._max_bytes:
            return self._close(CloseCode.MESSAGE_TOO_BIG, "message too big")
        try:
            envelope = self._decoder.decode(frame, now)
        except EnvelopeError as exc:
            return self._error(exc.code, exc.detail, exc.message_id, now, path=exc.path)
        message_type = self._types.get(envelope.type)
        if message_type is None:
            return self._error(ErrorCode.UNKNOWN_TYPE, "unknown type", envelope.id, now)
        scorer = self.scorer
        if not message_type.csrf_exempt and scorer is not None and scorer.level(now) != "ok":
            if not self._restricted:  # once per connection: the first restriction
                self._restricted = True
                self._guard.audit("anomaly_restricted", "warning", session=self.session)
            return self._error(
                ErrorCode.RESTRICTED, "anomaly score over restrict", envelope.id, now
            )
        retry = self.limiter.check_type(message_type.name, now)
        if retry:
            return self._rate_limited(retry, envelope.id, now)
        if not message_type.csrf_exempt and not self._csrf_ok(envelope.csrf_token, now):
            return self._error(
                ErrorCode.CSRF_INVALID, "missing or wrong CSRF token", envelope.id, now
            )
        if message_type.roles and message_type.roles.isdisjoint(self.session.roles):
            return self._error(
                ErrorCode.FORBIDDEN, f"role not allowed for {message_type.name}", envelope.id, now
            )
        try:
            payload = msgspec.convert(
                envelope.payload, message_type.schema, strict=True, dec_hook=self._dec_hook
            )
        except msgspec.ValidationError as exc:
            path = _validation_path(exc)
            return self._error(
                ErrorCode.INVALID_PAYLOAD, f"schema: {path}", envelope.id, now, path=path
            )
        if self._signatures is not None:
            match = self._signatures.scan(payload, "$.payload")
            if match is not None:
                refused = self._signature_match(match.category, match.path, envelope.id, now)
                if refused is not None:
                    return refused
        if message_type.handler is None:
            if message_type.name == "health-check":
                return Reply(
                    encode_frame(
                        "health-check", {"status": "ok", "serverTime": int(now * 1000)}, envelope.id
                    ),
                    type="health-check",
                )
            if isinstance(payload, TokenRefreshPayload):
                return self._refresh(payload, envelope.id, now)
        elif self._track_idle:
            self._guard.sessions.touch(self.session.id, now)
        # tuple.__new__ builds the named tuples without their Python __new__.
        message = _new(Message, (envelope.type, envelope.id, payload, self.session))
        return _new(Deliver, (message, message_type))

    def receive_ping(self) -> Close | None:
        """Count a ping from the client; a flood closes with 4429 (and bans)."""
        if self.limiter.check_ping(self._clock.now()):
            return self._abuse("ping flood")
        return None

    def rotate_csrf(self) -> str:
        """Issue a new CSRF token; the old one stays valid for a short grace period."""
        self._previous_csrf = self.session.csrf_token
        self._previous_csrf_until = self._clock.now() + self._csrf_grace
        self.session.csrf_token = new_csrf_token()
        return self.session.csrf_token

    def terminate(self) -> None:
        """Refuse every later frame (an administrator ended the session)."""
        self.closed = True

    def release(self) -> None:
        """Give back the shared per-user budget; called once the connection ended."""
        if self._user_bucket_held:
            self._user_bucket_held = False
            self._guard.user_buckets.release(self.session.user)

    # Checks.

    def _csrf_ok(self, token: str | None, now: float) -> bool:
        if token is None:
            return False
        candidate = token.encode()
        if hmac.compare_digest(candidate, self.session.csrf_token.encode()):
            return True
        previous = self._previous_csrf
        return (
            previous is not None
            and now <= self._previous_csrf_until
            and hmac.compare_digest(candidate, previous.encode())
        )

    def _refresh(
        self, payload: TokenRefreshPayload, message_id: str | None, now: float
    ) -> MessageDecision:
        session = self.session
        guard = self._guard
        try:
            claims = guard.verifier.verify(payload.token)
        except AuthenticationFailed as exc:
            return self._error(ErrorCode.TOKEN_INVALID, f"refresh: {exc.reason}", message_id, now)
        if claims.subject != session.user:
            return self._error(ErrorCode.TOKEN_INVALID, "refresh: other subject", message_id, now)
        if session.issued_at is not None and (
            claims.issued_at is None or claims.issued_at < session.issued_at
        ):
            return self._error(ErrorCode.TOKEN_INVALID, "refresh: older token", message_id, now)
        if guard.revocations.is_revoked(claims, now):
            return self._error(ErrorCode.TOKEN_INVALID, "refresh: revoked", message_id, now)
        session.expires_at = claims.expires_at
        self._expires_limit = claims.expires_at + self._leeway
        session.issued_at = claims.issued_at
        session.token_id = claims.token_id
        session.roles = claims.roles
        csrf = self.rotate_csrf()
        guard.sessions.mark_csrf_rotated(session.id, now)  # the schedule restarts from here
        guard.audit("token_refreshed", session=session)
        return Reply(
            encode_frame(
                "token_refreshed",
                {"expiresAt": int(claims.expires_at * 1000), "csrfToken": csrf},
                message_id,
            ),
            type="token_refresh",
        )

    def _signature_match(
        self, category: str, path: str, message_id: str | None, now: float
    ) -> MessageDecision | None:
        self._guard.audit(
            "signature_match", "warning", session=self.session, category=category, path=path
        )
        if self._score(AnomalyEvent.SIGNATURE_MATCH, now) == "disconnect":
            return self._abuse("anomaly score")
        if self._refuse_signatures:
            request_id = new_request_id()
            frame = error_frame(ErrorCode.INVALID_PAYLOAD, request_id, message_id, path=path)
            return Reply(frame, request_id, f"attack signature {category} at {path}", "signature")
        return None

    def _score(self, event: AnomalyEvent, now: float) -> Level:
        """Add ``event`` to this connection's anomaly score; returns the new level."""
        scorer = self.scorer
        if scorer is None:
            scorer = self.scorer = AnomalyScorer(self._guard.config.anomaly)
        scorer.record(event, now)
        return scorer.level(now)

    # Decisions.

    def _rate_limited(self, retry: float, message_id: str | None, now: float) -> MessageDecision:
        guard = self._guard
        guard.metrics.rate_limit_hits_total.labels(scope="message").inc()
        if self.limiter.should_disconnect:
            return self._abuse("rate limit violations")
        if now >= self._next_rate_audit:  # one audit line a second, not one per flooded frame
            self._next_rate_audit = now + 1.0
            guard.audit("rate_limited", "warning", session=self.session)
        return self._error(
            ErrorCode.RATE_LIMITED,
            "rate limited",
            message_id,
            now,
            retry_after_ms=max(1, math.ceil(retry * 1000)),
        )

    def _error(
        self,
        code: ErrorCode,
        detail: str,
        message_id: str | None,
        now: float,
        *,
        path: str | None = None,
        retry_after_ms: int | None = None,
    ) -> MessageDecision:
        event = _SCORED.get(code)
        if event is not None:
            if self._score(event, now) == "disconnect":
                return self._abuse("anomaly score")
            if not self.exempt:
                # The IP's score sums its connections, so that spreading probes
                # over many connections does not keep each under the threshold.
                ip_scores = self._guard.ip_scores
                ip_scores.record(self.rate_key, event, now)
                if ip_scores.level(self.rate_key, now) == "disconnect":
                    return self._abuse("IP anomaly score")
        audited = _AUDITED.get(code)
        if audited is not None:
            self._guard.audit(audited, "warning", session=self.session, detail=detail)
        request_id = new_request_id()
        frame = error_frame(code, request_id, message_id, path=path, retry_after_ms=retry_after_ms)
        return Reply(frame, request_id, detail, code.value.lower())

    def _abuse(self, detail: str) -> Close:
        """Close 4429 and ban the user, and the IP unless it is exempt."""
        guard = self._guard
        self.closed = True  # before the bans, which close every other covered session
        guard.metrics.anomaly_disconnects_total.inc()
        guard.audit("disconnect_abuse", "critical", session=self.session, reason=detail)
        if not self.exempt:
            guard.ban("ip", self.rate_key, detail)
        guard.ban("user", self.session.user, detail)
        return self._close(CloseCode.ABUSE, detail)

    def _close(self, code: CloseCode, detail: str) -> Close:
        self.closed = True
        return Close(code, CLOSE_REASONS[code], detail)
