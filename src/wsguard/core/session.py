"""A live session: who is connected, with which CSRF token, until when."""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field

from wsguard.core.entropy import random_bytes
from wsguard.typing import SessionId, UserId

CSRF_TOKEN_BYTES = 24  # 192 bits from os.urandom; PROTOCOL.md asks for at least 128
SESSION_ID_BYTES = 16


def new_session_id() -> SessionId:
    # Hex, not base64url: an id starting with "-" would read as an option on the
    # command line (`wsguard sessions kill ID`).
    return SessionId(random_bytes(SESSION_ID_BYTES).hex())


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _csrf_text(raw: bytes) -> str:
    # 24 bytes: 32 base64url characters, no padding (as secrets.token_urlsafe);
    # binascii directly, without base64.urlsafe_b64encode's Python layers.
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).decode("ascii")


def new_csrf_token() -> str:
    return _csrf_text(random_bytes(CSRF_TOKEN_BYTES))


def new_session_secrets() -> tuple[SessionId, str]:
    """A new session id and CSRF token, from one draw of random bytes.

    The two values never share a byte: the id is the first 16 bytes, the token
    the next 24.
    """
    raw = random_bytes(SESSION_ID_BYTES + CSRF_TOKEN_BYTES)
    return SessionId(raw[:SESSION_ID_BYTES].hex()), _csrf_text(raw[SESSION_ID_BYTES:])


@dataclass(slots=True, eq=False)
class Session:
    """One guarded connection's identity and secrets.

    Handlers may read it; only the core changes it (token refresh, CSRF rotation).

    Attributes:
        id: random session id, sent in the welcome frame.
        user: the token's ``sub``.
        roles: the token's roles.
        peer: the client IP.
        user_agent: the ``User-Agent`` header, if any.
        created_at: seconds since the epoch.
        expires_at: the token's ``exp``.
        issued_at: the token's ``iat``, if any.
        token_id: the token's ``jti``, if any.
    """

    id: SessionId
    user: UserId
    roles: frozenset[str]
    peer: str
    user_agent: str | None
    created_at: float
    expires_at: float
    issued_at: float | None = None
    token_id: str | None = None
    csrf_token: str = field(default_factory=new_csrf_token, repr=False)

    def __repr__(self) -> str:  # never show the CSRF token
        return f"Session(id={self.id!r}, user={self.user!r}, peer={self.peer!r})"
