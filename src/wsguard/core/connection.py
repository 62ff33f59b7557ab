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
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from wsguard.core.auth import TokenVerifier
from wsguard.core.clock import Clock
from wsguard.core.decisions import Close, Deliver, Message, MessageDecision, Reply
from wsguard.core.envelope import EnvelopeDecoder, EnvelopeError
from wsguard.core.errors import CLOSE_REASONS, CloseCode, ErrorCode
from wsguard.core.frames import encode_frame, error_frame
from wsguard.core.session import Session, new_csrf_token
from wsguard.core.types import MessageType, TokenRefreshPayload
from wsguard.exceptions import AuthenticationFailed

CSRF_GRACE_S = 30.0  # the previous CSRF token stays valid this long after a rotation
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

    Args:
        session: the connection's session, made at the handshake.
        types: the registered message types by name.
        decoder: the envelope decoder.
        dec_hook: the msgspec hook that sanitizes Html and SafePath fields.
        verifier: verifies tokens sent with ``token_refresh``.
        clock: the injected clock.
        max_message_bytes: the size limit (the adapter should enforce it first).
    """

    def __init__(
        self,
        *,
        session: Session,
        types: Mapping[str, MessageType],
        decoder: EnvelopeDecoder,
        dec_hook: Callable[[type, Any], Any],
        verifier: TokenVerifier,
        clock: Clock,
        max_message_bytes: int,
    ) -> None:
        self.session = session
        self._types = types
        self._decoder = decoder
        self._dec_hook = dec_hook
        self._verifier = verifier
        self._clock = clock
        self._max_bytes = max_message_bytes
        self._previous_csrf: str | None = None
        self._previous_csrf_until = 0.0
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
        if not isinstance(frame, str):
            return self._close(CloseCode.UNSUPPORTED_DATA, "binary frame")
        if len(frame) > self._max_bytes // 4 and len(frame.encode()) > self._max_bytes:
            return self._close(CloseCode.MESSAGE_TOO_BIG, "message too big")
        now = self._clock.now()
        try:
            envelope = self._decoder.decode(frame, now)
        except EnvelopeError as exc:
            return self._error(exc.code, exc.detail, exc.message_id, path=exc.path)
        message_type = self._types.get(envelope.type)
        if message_type is None:
            return self._error(ErrorCode.UNKNOWN_TYPE, "unknown type", envelope.id)
        if not message_type.csrf_exempt and not self._csrf_ok(envelope.csrf_token, now):
            return self._error(ErrorCode.CSRF_INVALID, "missing or wrong CSRF token", envelope.id)
        if message_type.roles and message_type.roles.isdisjoint(self.session.roles):
            return self._error(
                ErrorCode.FORBIDDEN, f"role not allowed for {message_type.name}", envelope.id
            )
        try:
            payload = msgspec.convert(
                envelope.payload, message_type.schema, strict=True, dec_hook=self._dec_hook
            )
        except msgspec.ValidationError as exc:
            path = _validation_path(exc)
            return self._error(ErrorCode.INVALID_PAYLOAD, f"schema: {path}", envelope.id, path=path)
        if message_type.name == "health-check" and message_type.handler is None:
            return Reply(
                encode_frame(
                    "health-check", {"status": "ok", "serverTime": int(now * 1000)}, envelope.id
                )
            )
        if isinstance(payload, TokenRefreshPayload) and message_type.handler is None:
            return self._refresh(payload, envelope.id, now)
        return Deliver(Message(envelope.type, envelope.id, payload, self.session), message_type)

    def rotate_csrf(self) -> str:
        """Issue a new CSRF token; the old one stays valid for a short grace period."""
        self._previous_csrf = self.session.csrf_token
        self._previous_csrf_until = self._clock.now() + CSRF_GRACE_S
        self.session.csrf_token = new_csrf_token()
        return self.session.csrf_token

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
        try:
            claims = self._verifier.verify(payload.token)
        except AuthenticationFailed as exc:
            return self._error(ErrorCode.TOKEN_INVALID, f"refresh: {exc.reason}", message_id)
        if claims.subject != session.user:
            return self._error(ErrorCode.TOKEN_INVALID, "refresh: other subject", message_id)
        if session.issued_at is not None and (
            claims.issued_at is None or claims.issued_at < session.issued_at
        ):
            return self._error(ErrorCode.TOKEN_INVALID, "refresh: older token", message_id)
        session.expires_at = claims.expires_at
        session.issued_at = claims.issued_at
        session.token_id = claims.token_id
        session.roles = claims.roles
        csrf = self.rotate_csrf()
        return Reply(
            encode_frame(
                "token_refreshed",
                {"expiresAt": int(claims.expires_at * 1000), "csrfToken": csrf},
                message_id,
            ),
            detail="token refreshed",
        )

    # Decisions.

    def _error(
        self, code: ErrorCode, detail: str, message_id: str | None, *, path: str | None = None
    ) -> Reply:
        request_id = new_request_id()
        return Reply(error_frame(code, request_id, message_id, path=path), request_id, detail)

    def _close(self, code: CloseCode, detail: str) -> Close:
        self.closed = True
        return Close(code, CLOSE_REASONS[code], detail)
