"""wsguard: a security layer for Python WebSocket services.

Build a :class:`Guard` from a :class:`GuardConfig`, register message types with a
payload schema and the roles allowed, and serve it with an adapter::

    from wsguard import Guard, GuardConfig, JwtConfig
    from wsguard.adapters.websockets import serve

    guard = Guard(GuardConfig(jwt=JwtConfig(secret=SECRET)))

    @guard.message("chat", schema=ChatPayload, roles={"user"})
    async def chat(ctx, message):
        await ctx.reply(message, "chat", {"text": message.payload.text})
"""

from __future__ import annotations

from wsguard.config import (
    CredentialsConfig,
    GuardConfig,
    JwtConfig,
    MessageConfig,
    OriginConfig,
    ServerConfig,
    load_config,
)
from wsguard.core.clock import Clock, FakeClock, SystemClock
from wsguard.core.decisions import Message
from wsguard.core.guard import Guard
from wsguard.core.sanitize import Html, SafePath
from wsguard.core.session import Session
from wsguard.core.types import (
    AckPayload,
    ChatPayload,
    EmptyPayload,
    FileUploadPayload,
    NotificationPayload,
)
from wsguard.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    OriginRejected,
    PolicyViolation,
    WSGuardError,
)

__all__ = [
    "AckPayload",
    "AuthenticationFailed",
    "ChatPayload",
    "Clock",
    "ConfigurationError",
    "CredentialsConfig",
    "EmptyPayload",
    "FakeClock",
    "FileUploadPayload",
    "Guard",
    "GuardConfig",
    "Html",
    "JwtConfig",
    "Message",
    "MessageConfig",
    "NotificationPayload",
    "OriginConfig",
    "OriginRejected",
    "PolicyViolation",
    "SafePath",
    "ServerConfig",
    "Session",
    "SystemClock",
    "WSGuardError",
    "load_config",
]
