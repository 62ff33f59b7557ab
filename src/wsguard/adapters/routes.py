"""wsguard's HTTP endpoints: health, metrics, one-time tickets and the admin API.

- ``GET /healthz``: liveness; ``GET /readyz``: ready (not shutting down, breakers closed).
- ``GET /metrics``: Prometheus text format.
- ``POST /auth/ticket`` with ``Authorization: Bearer <jwt>``: a one-time ticket.
- ``GET /admin/sessions``, ``DELETE /admin/sessions/{id}``,
  ``DELETE /admin/users/{sub}/sessions``, ``GET/POST/DELETE /admin/bans``:
  only with ``admin_token`` configured, sent as ``Authorization: Bearer``
  and compared in constant time; 404 when no admin token is set.

Every route answers on the WebSocket port (``GET`` through ``process_request``,
other methods read by :class:`~wsguard.adapters.websockets.GuardedConnection`,
since ``websockets`` parses only ``GET``) and on the optional HTTP API port.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from wsguard.adapters.http_api import HttpRequest, HttpResponse
from wsguard.core.tickets import TicketsExhausted
from wsguard.exceptions import AuthenticationFailed
from wsguard.production import security_headers

if TYPE_CHECKING:
    from wsguard.adapters.websockets import GuardedServer

JSON = "application/json"
MAX_BAN_SECONDS = 30 * 86400.0


def _json(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status, json.dumps(body).encode(), JSON)


def _text(status: int, text: str) -> HttpResponse:
    return HttpResponse(status, text.encode())


def _bearer(request: HttpRequest) -> str | None:
    value = request.header("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Routes:
    """Answers wsguard's HTTP endpoints for one :class:`GuardedServer`."""

    def __init__(self, guarded: GuardedServer) -> None:
        self._guarded = guarded
        self._guard = guarded.guard
        self._headers = security_headers(guarded.guard.config)
        self.private_port = False
        """True once a separate HTTP API port serves the admin API and metrics;
        the WebSocket port then answers them with 404."""

    async def handle(self, request: HttpRequest, *, public: bool = False) -> HttpResponse:
        """Answer one request; every response carries the security headers.

        Args:
            request: the parsed request.
            public: it came to the WebSocket port rather than the HTTP API port.
        """
        response = self._route(request, public)
        return dataclasses.replace(response, headers=(*self._headers, *response.headers))

    def _route(self, request: HttpRequest, public: bool) -> HttpResponse:
        path, method = request.path, request.method
        if public and self.private_port and (path == "/metrics" or path.startswith("/admin/")):
            return _text(404, "Not Found\n")
        if path == "/healthz" and method == "GET":
            return _json(200, {"status": "ok"})
        if path == "/readyz" and method == "GET":
            return self._ready()
        if path == "/metrics" and method == "GET":
            body, content_type = self._guard.metrics.render()
            return HttpResponse(200, body, content_type)
        if path == "/auth/ticket":
            if method != "POST":
                return _text(405, "Method Not Allowed\n")
            return self._ticket(request)
        if path.startswith("/admin/"):
            return self._admin(request)
        return _text(404, "Not Found\n")

    def _ready(self) -> HttpResponse:
        guard = self._guard
        reputation = self._guarded.reputation
        breakers = {}
        if reputation is not None:
            breakers["reputation"] = str(reputation.breaker_state)
        ready = not guard.shutting_down and all(s != "open" for s in breakers.values())
        body = {"status": "ready" if ready else "unavailable", "circuits": breakers}
        return _json(200 if ready else 503, body)

    def _ticket(self, request: HttpRequest) -> HttpResponse:
        token = _bearer(request)
        if token is None:
            return _text(401, "Unauthorized\n")
        try:
            ticket = self._guard.issue_ticket(token)
        except AuthenticationFailed as exc:
            self._guard.audit("auth_failed", "warning", client_ip=request.peer, reason=exc.reason)
            return _text(401, "Unauthorized\n")
        except TicketsExhausted:
            return _text(503, "Service Unavailable\n")
        ttl_ms = int(self._guard.tickets.ttl * 1000)
        return _json(200, {"ticket": ticket, "expiresInMs": ttl_ms})

    # The admin API.

    def _admin(self, request: HttpRequest) -> HttpResponse:
        guard = self._guard
        expected = guard.config.admin_token
        if not expected:
            return _text(404, "Not Found\n")  # switched off unless configured
        given = _bearer(request) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            guard.audit("admin_refused", "warning", client_ip=request.peer)
            # Guessing the admin token spends the IP's handshake attempt budget.
            if guard.charge_attempt(request.peer):
                return HttpResponse(429, b"Too Many Requests\n", headers=(("Retry-After", "10"),))
            return _text(401, "Unauthorized\n")
        parts = [unquote(p) for p in request.path.split("/")[2:]]
        method = request.method
        if parts == ["sessions"] and method == "GET":
            return _json(200, {"sessions": [self._session_view(s) for s in guard.sessions.all()]})
        if len(parts) == 2 and parts[0] == "sessions" and method == "DELETE":
            done = self._guarded.terminate_session(parts[1], actor="admin-api")
            self._admin_audit(request, "terminate_session", found=done)
            return _json(200 if done else 404, {"terminated": 1 if done else 0})
        if len(parts) == 3 and parts[0] == "users" and parts[2] == "sessions":
            if method != "DELETE":
                return _text(405, "Method Not Allowed\n")
            count = self._guarded.terminate_user(parts[1], actor="admin-api")
            self._admin_audit(request, "terminate_user", count=count)
            return _json(200, {"terminated": count})
        if parts == ["bans"]:
            return self._bans(request)
        return _text(404, "Not Found\n")

    def _bans(self, request: HttpRequest) -> HttpResponse:
        guard = self._guard
        now = guard.clock.now()
        if request.method == "GET":
            bans = [
                {
                    "kind": b.kind,
                    "key": b.key,
                    "until": b.until,
                    "reason": b.reason,
                    "count": b.count,
                }
                for b in guard.bans.list(now)
            ]
            return _json(200, {"bans": bans})
        if request.method not in ("POST", "DELETE"):
            return _text(405, "Method Not Allowed\n")
        try:
            body = json.loads(request.body or b"{}")
            kind, key = body["kind"], body["key"]
            if kind not in ("ip", "user") or not isinstance(key, str) or not key:
                raise ValueError
            seconds = body.get("seconds")
            if seconds is not None and (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not 0 < seconds <= MAX_BAN_SECONDS
            ):
                raise ValueError
            reason = str(body.get("reason", "admin"))[:64]
        except (ValueError, KeyError, TypeError):
            return _text(400, "Bad Request\n")
        if kind == "ip":
            key = guard.identity.rate_key(key)
        if request.method == "DELETE":
            removed = guard.unban(kind, key)
            self._admin_audit(request, "unban", kind=kind, target=key)
            return _json(200 if removed else 404, {"removed": removed})
        ban = guard.ban(kind, key, reason, seconds)
        self._admin_audit(request, "ban", kind=kind, target=key)
        return _json(201, {"kind": ban.kind, "key": ban.key, "until": ban.until})

    def _admin_audit(self, request: HttpRequest, action: str, **details: Any) -> None:
        self._guard.audit(
            "admin_action", "warning", client_ip=request.peer, action=action, **details
        )

    @staticmethod
    def _session_view(session: Any) -> dict[str, Any]:
        return {
            "id": session.id,
            "user": session.user,
            "roles": sorted(session.roles),
            "ip": session.peer,
            "userAgent": session.user_agent,
            "createdAt": int(session.created_at * 1000),
            "expiresAt": int(session.expires_at * 1000),
        }
