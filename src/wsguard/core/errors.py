"""Error codes and close codes of the wire protocol (PROTOCOL.md sections 5 and 6).

A client gets a fixed public text per code: never its own input, a path, a
stack trace or a version. The detail goes to the server log under a request id.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """The ``payload.code`` of an ``error`` frame."""

    INVALID_MESSAGE = "INVALID_MESSAGE"
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    CSRF_INVALID = "CSRF_INVALID"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    RESTRICTED = "RESTRICTED"
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    SESSION_TERMINATED = "SESSION_TERMINATED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    UNAVAILABLE = "UNAVAILABLE"


PUBLIC_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INVALID_MESSAGE: "Invalid message",
    ErrorCode.INVALID_PAYLOAD: "Invalid payload",
    ErrorCode.UNKNOWN_TYPE: "Unknown message type",
    ErrorCode.CSRF_INVALID: "Invalid CSRF token",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.RATE_LIMITED: "Too many messages",
    ErrorCode.RESTRICTED: "Restricted",
    ErrorCode.TOKEN_INVALID: "Invalid token",
    ErrorCode.TOKEN_EXPIRED: "Token expired",
    ErrorCode.SESSION_TERMINATED: "Session terminated",
    ErrorCode.INTERNAL_ERROR: "Internal error",
    ErrorCode.UNAVAILABLE: "Service unavailable",
}


class CloseCode(enum.IntEnum):
    """WebSocket close codes used by wsguard."""

    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    TOKEN_EXPIRED = 4401
    FORBIDDEN = 4403
    SESSION_TIMEOUT = 4408
    SESSION_REPLACED = 4409
    SESSION_TERMINATED = 4410
    ABUSE = 4429


CLOSE_REASONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "normal",
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.UNSUPPORTED_DATA: "binary frames not accepted",
    CloseCode.INVALID_DATA: "invalid UTF-8",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.TRY_AGAIN_LATER: "try again later",
    CloseCode.TOKEN_EXPIRED: "token expired",
    CloseCode.FORBIDDEN: "forbidden",
    CloseCode.SESSION_TIMEOUT: "session timed out",
    CloseCode.SESSION_REPLACED: "session replaced",
    CloseCode.SESSION_TERMINATED: "session terminated",
    CloseCode.ABUSE: "abuse",
}
