"""Checks on the opening handshake (PROTOCOL.md sections 1 and 2).

Cheapest first, so that abusive traffic costs the least: path, Origin, then the
credential, whose signature check is the expensive step.
"""

from __future__ import annotations

import base64
import json
from typing import Literal
from urllib.parse import parse_qsl

from wsguard.config import CredentialsConfig, normalize_origin
from wsguard.core.decisions import HandshakeRequest
from wsguard.core.frames import PROTOCOL_VERSION
from wsguard.exceptions import AuthenticationFailed, OriginRejected

BEARER_SUBPROTOCOL_PREFIX = "wsguard.bearer."

REJECT_BODIES = {
    401: "Unauthorized\n",
    403: "Forbidden\n",
    404: "Not Found\n",
    426: "Upgrade Required\n",
    429: "Too Many Requests\n",
    503: "Service Unavailable\n",
}


def check_origin(request: HandshakeRequest, allowed: frozenset[str], required: bool) -> None:
    """Refuse a cross-site upgrade (Cross-Site WebSocket Hijacking).

    Raises:
        OriginRejected: ``Origin`` off the allow list, ``null``, or absent when required.
    """
    values = [value for key, value in request.headers if key == "origin"]
    if not values:
        if required:
            raise OriginRejected("Origin missing")
        return
    if len(values) > 1:
        raise OriginRejected("several Origin headers")
    origin = values[0].strip()
    if origin.lower() == "null":
        raise OriginRejected("Origin null")
    if normalize_origin(origin) not in allowed:
        raise OriginRejected("Origin not allowed")


CredentialKind = Literal["token", "ticket"]


def extract_credential(
    request: HandshakeRequest, sources: CredentialsConfig
) -> tuple[CredentialKind, str, str | None]:
    """Find the credential and the subprotocol to answer.

    Sources are tried in a fixed order: ``Authorization`` header, bearer
    subprotocol, one-time ``?ticket=``, cookie, then ``?token=`` when enabled.

    Returns:
        ``(kind, credential, subprotocol)``; the subprotocol is ``wsguard.v1``
        when the client offered it, never the one that carries the token.

    Raises:
        AuthenticationFailed: no credential from an enabled source, a token in the
            query string while that source is off, or a malformed offer.
    """
    offered = list(request.header_values("sec-websocket-protocol"))
    subprotocol = PROTOCOL_VERSION if PROTOCOL_VERSION in offered else None
    query = dict(parse_qsl(request.query, keep_blank_values=True)) if request.query else {}
    if "token" in query and not sources.query_token:
        # Refused outright rather than ignored: a token in a URL has already leaked.
        raise AuthenticationFailed("token in query string while that source is off")
    if sources.bearer_header:
        authorization = request.header("authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationFailed("malformed Authorization header")
            return "token", token.strip(), subprotocol
    if sources.subprotocol:
        bearers = [p for p in offered if p.startswith(BEARER_SUBPROTOCOL_PREFIX)]
        if bearers:
            if len(bearers) > 1:
                raise AuthenticationFailed("several bearer subprotocols")
            if subprotocol is None:
                raise AuthenticationFailed(f"bearer subprotocol without {PROTOCOL_VERSION}")
            return "token", bearers[0][len(BEARER_SUBPROTOCOL_PREFIX) :], subprotocol
    if sources.ticket and query.get("ticket"):
        return "ticket", query["ticket"], subprotocol
    if sources.cookie:
        value = _cookie(request, sources.cookie)
        if value:
            return "token", value, subprotocol
    if sources.query_token and query.get("token"):
        return "token", query["token"], subprotocol
    raise AuthenticationFailed("no credential")


def _cookie(request: HandshakeRequest, name: str) -> str | None:
    for header in (value for key, value in request.headers if key == "cookie"):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"') or None
    return None


def unverified_subject(request: HandshakeRequest, sources: CredentialsConfig) -> str | None:
    """The ``sub`` a failed token claims, for credential-stuffing detection only.

    Never trusted for anything else: the signature did not verify.
    """
    try:
        kind, credential, _ = extract_credential(request, sources)
        if kind != "token":
            return None
        segment = credential.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (AuthenticationFailed, IndexError, ValueError, TypeError):
        return None
    subject = claims.get("sub") if isinstance(claims, dict) else None
    return subject[:256] if isinstance(subject, str) else None
