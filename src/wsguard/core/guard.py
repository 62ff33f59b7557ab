"""The guard: registered message types plus the handshake and message policies.

Build one per application from a :class:`~wsguard.config.GuardConfig`, register
message types on it, and hand it to an adapter. The guard does no I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import msgspec

from wsguard.config import GuardConfig
from wsguard.core.auth import TokenVerifier
from wsguard.core.clock import Clock, SystemClock
from wsguard.core.connection import ConnectionPolicy
from wsguard.core.decisions import Accept, HandshakeDecision, HandshakeRequest, Reject
from wsguard.core.envelope import EnvelopeDecoder
from wsguard.core.frames import PROTOCOL_VERSION, encode_frame
from wsguard.core.handshake import REJECT_BODIES, check_origin, extract_token
from wsguard.core.sanitize import HtmlCleaner, make_dec_hook
from wsguard.core.session import Session, new_session_id
from wsguard.core.types import (
    AckPayload,
    EmptyPayload,
    Handler,
    MessageType,
    TokenRefreshPayload,
    make_message_type,
)
from wsguard.exceptions import ConfigurationError, PolicyViolation
from wsguard.typing import UserId

H = TypeVar("H", bound=Handler)
Hook = Callable[[Any], Awaitable[None]]


class Guard:
    """Holds the policy of one protected endpoint.

    Args:
        config: the validated configuration.
        clock: the time source; the system clock unless a test injects one.
        html_cleaner: the HTML cleaner for ``Html`` fields; a safe default.

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
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.verifier = TokenVerifier(config.jwt, self.clock)
        self._decoder = EnvelopeDecoder(config.messages)
        self._dec_hook = make_dec_hook(html_cleaner or HtmlCleaner())
        self._allowed_origins = config.allowed_origins()
        self._origin_required = config.origins.require
        self.types: dict[str, MessageType] = {}
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
    ) -> MessageType:
        """Register (or replace) a message type.

        Args:
            name: the envelope ``type``.
            schema: a frozen msgspec Struct for the payload.
            handler: ``async def handler(ctx, message)``; None for core-answered types.
            roles: roles allowed to send it; empty allows every authenticated user.
            csrf_exempt: whether it may omit ``csrfToken``; defaults to the config's list.

        Raises:
            ConfigurationError: for a bad name or schema.
        """
        exempt = name in self.config.messages.csrf_exempt if csrf_exempt is None else csrf_exempt
        message_type = make_message_type(name, schema, roles, handler, exempt)
        self.types[name] = message_type
        return message_type

    def message(
        self,
        name: str,
        *,
        schema: type[msgspec.Struct] = EmptyPayload,
        roles: Iterable[str] = (),
        csrf_exempt: bool | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`register`."""

        def decorator(handler: H) -> H:
            self.register(name, schema, handler, roles=roles, csrf_exempt=csrf_exempt)
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

    # The handshake.

    def handshake(self, request: HandshakeRequest) -> HandshakeDecision:
        """Decide on an opening handshake.

        Returns:
            :class:`Accept` with the connection's policy and welcome frame, or
            :class:`Reject` with a plain HTTP response to send instead.
        """
        if request.path != self.config.server.path:
            return Reject(404, REJECT_BODIES[404], "unknown path")
        try:
            check_origin(request, self._allowed_origins, self._origin_required)
            token, subprotocol = extract_token(request, self.config.credentials)
            claims = self.verifier.verify(token)
        except PolicyViolation as exc:
            return Reject(exc.http_status, REJECT_BODIES[exc.http_status], exc.reason)
        now = self.clock.now()
        session = Session(
            id=new_session_id(),
            user=UserId(claims.subject),
            roles=claims.roles,
            peer=request.peer,
            user_agent=request.header("user-agent"),
            created_at=now,
            expires_at=claims.expires_at,
            issued_at=claims.issued_at,
            token_id=claims.token_id,
        )
        policy = ConnectionPolicy(
            session=session,
            types=self.types,
            decoder=self._decoder,
            dec_hook=self._dec_hook,
            verifier=self.verifier,
            clock=self.clock,
            max_message_bytes=self.config.messages.max_message_bytes,
        )
        return Accept(policy, subprotocol, self.welcome_frame(session))

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


def check_handlers(guard: Guard) -> None:
    """Refuse to serve a type registered with no handler that the core cannot answer.

    Raises:
        ConfigurationError: naming the type.
    """
    for name, message_type in guard.types.items():
        if message_type.handler is None and name not in ("health-check", "token_refresh", "ack"):
            raise ConfigurationError(f"message type {name!r}", "registered without a handler")
