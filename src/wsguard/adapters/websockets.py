"""The ``websockets`` (asyncio) server adapter.

It plugs into ``websockets``' own hooks rather than forking its server:
``process_request`` runs the guard's handshake policy (and answers wsguard's
``GET`` endpoints) and opens the session, ``select_subprotocol`` answers
``wsguard.v1`` (never the token-carrying offer), and ``create_connection``
installs :class:`~wsguard.adapters.connection.GuardedConnection`, which counts
client pings and hands each message to
:class:`~wsguard.core.connection.ConnectionPolicy` as it is read. ``max_size``
is the message limit, so an oversized frame is never buffered (close 1009);
invalid UTF-8 closes with 1007, as ``websockets`` does.

Usage::

    async with serve(guard, "127.0.0.1", 8765) as service:
        await service.wait_closed()
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from wsguard.adapters.connection import GuardedConnection, peer_ip
from wsguard.adapters.fastpath import Resumed, write_text
from wsguard.adapters.freeze import freeze_startup_objects
from wsguard.adapters.http_api import HttpApiServer, HttpRequest, HttpResponse, render_response
from wsguard.adapters.routes import Routes
from wsguard.core.connection import ConnectionPolicy, new_request_id
from wsguard.core.decisions import Accept, Close, Deliver, HandshakeRequest, Message, Reply
from wsguard.core.errors import CLOSE_REASONS, CloseCode, ErrorCode
from wsguard.core.frames import encode_frame, error_frame
from wsguard.core.guard import Guard, check_handlers
from wsguard.core.handshake import REJECT_BODIES
from wsguard.core.session import Session
from wsguard.production import security_headers
from wsguard.reputation import Reputation

logger = logging.getLogger("wsguard")

TICK_S = 1.0  # timers (expiry, lifetime, idle, CSRF rotation, pings) run this often


class Context:
    """What a handler gets beside the message: its session and a way to answer.

    Handlers must not keep references to a context after its connection closed;
    :attr:`open` says whether it still is.
    """

    __slots__ = ("_connection", "_session", "state")

    def __init__(self, connection: ServerConnection, session: Session) -> None:
        self._connection = connection
        self._session = session
        self.state: dict[str, Any] = {}
        """Free space for the application's per-connection data."""

    @property
    def session(self) -> Session:
        return self._session

    @property
    def open(self) -> bool:
        return self._connection.protocol.state is State.OPEN

    async def send(self, kind: str, payload: Any, message_id: str | None = None) -> None:
        """Send a typed frame: ``payload`` is a dict or a msgspec Struct."""
        await send_text(self._connection, encode_frame(kind, payload, message_id))

    async def reply(self, message: Message, kind: str, payload: Any) -> None:
        """Send a frame that carries the client's ``id`` of ``message``."""
        data = encode_frame(kind, payload, message.id)
        connection = self._connection
        # Inline: a reply that can be written now costs no coroutine of websockets.
        if not write_text(connection, data):
            await connection.send(data, text=True)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)


async def send_text(connection: ServerConnection, data: bytes) -> None:
    """Send a text frame: written at once when possible, else through ``websockets``."""
    if not write_text(connection, data):
        await connection.send(data, text=True)


def send_or_later(connection: ServerConnection, data: bytes) -> Awaitable[None] | None:
    """Write a text frame now if possible; else return the send to await.

    Nothing is raised for a closed connection: the frame is then dropped.
    """
    if write_text(connection, data):
        return None
    return _send_quietly(connection, data)


async def _send_quietly(connection: ServerConnection, data: bytes) -> None:
    try:
        await connection.send(data, text=True)
    except ConnectionClosed:
        pass


class Live:
    """A registered connection: what the registry's handle points to."""

    __slots__ = ("connection", "context", "ping_sent_at", "pong_waiter", "policy")

    def __init__(
        self, connection: ServerConnection, policy: ConnectionPolicy, ctx: Context
    ) -> None:
        self.connection = connection
        self.policy = policy
        self.context = ctx
        self.ping_sent_at = 0.0
        self.pong_waiter: asyncio.Future[float] | None = None


class GuardedServer:
    """Wires a :class:`Guard` into ``websockets``' server hooks.

    Args:
        guard: the policy; its message types must all have handlers.
        reputation: the block list and reputation provider, if any.
    """

    def __init__(self, guard: Guard, reputation: Reputation | None = None) -> None:
        check_handlers(guard)
        self.guard = guard
        self.reputation = reputation
        self.routes = Routes(self)
        self._headers = security_headers(guard.config)
        self._closing: set[asyncio.Task[None]] = set()
        self._reported_failures = 0
        guard.ban_listeners.append(self.close_banned)

    # Hooks for websockets.

    def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None | Awaitable[Response | None]:
        """``websockets``' ``process_request`` hook: accept, or answer plain HTTP.

        A WebSocket handshake is decided here and now, without a coroutine;
        a plain HTTP request, or a reputation provider to ask, returns the
        coroutine that ``websockets`` awaits.
        """
        started = time.perf_counter()
        path, _, query = request.path.partition("?")
        headers = tuple([(k.lower(), v) for k, v in request.headers.raw_items()])
        peer = peer_ip(connection)
        tls = connection.transport.get_extra_info("ssl_object") is not None
        if path != self.guard.config.server.path:
            return self._answer_route(
                connection, HttpRequest("GET", path, query, headers, b"", peer, tls)
            )
        handshake = HandshakeRequest(peer, path, query, headers, tls)
        if self.reputation is not None:
            return self._decide_with_reputation(connection, handshake, started)
        return self._decide(connection, handshake, started, reputation_bad=False)

    async def _answer_route(self, connection: ServerConnection, request: HttpRequest) -> Response:
        answer = await self.routes.handle(request, public=True)
        response = connection.respond(answer.status, answer.body.decode())
        response.headers["Content-Type"] = answer.content_type
        for name, value in answer.headers:  # the security headers included
            response.headers[name] = value
        return response

    async def _decide_with_reputation(
        self, connection: ServerConnection, handshake: HandshakeRequest, started: float
    ) -> Response | None:
        assert self.reputation is not None  # help mypy
        identity = self.guard.identity
        ip = identity.client_ip(handshake.peer, handshake.headers)
        key = identity.rate_key(ip)
        # Ask the provider only for a client the cheap checks would not refuse
        # anyway: a banned or flooding IP must not cost a provider call.
        reputation_bad = False
        if not (
            identity.is_exempt(ip)
            or self.guard.bans.banned("ip", key, self.guard.clock.now()) is not None
            or self.guard.attempts_exhausted(key)
        ):
            reputation_bad = await self.reputation.is_bad(ip)
        return self._decide(connection, handshake, started, reputation_bad=reputation_bad)

    def _decide(
        self,
        connection: ServerConnection,
        handshake: HandshakeRequest,
        started: float,
        *,
        reputation_bad: bool,
    ) -> Response | None:
        decision = self.guard.handshake(handshake, reputation_bad=reputation_bad)
        self.guard.metrics.handshake_seconds.observe(time.perf_counter() - started)
        if isinstance(decision, Accept):
            return self._open(connection, decision, handshake.peer)
        logger.info(
            "handshake refused status=%d reason=%s peer=%s",
            decision.status,
            decision.reason,
            decision.client_ip or handshake.peer,
        )
        response = connection.respond(decision.status, decision.body)
        for name, value in (*self._headers, *decision.headers):
            response.headers[name] = value
        return response

    def _open(self, connection: ServerConnection, accepted: Accept, peer: str) -> Response | None:
        """Open the session of an accepted handshake; its welcome leaves with the 101.

        The session is counted in the same step as the decision that checked
        the caps, so no concurrent handshake can slip in between; if the
        upgrade then fails, the connection releases it when it goes.
        """
        guard = self.guard
        policy = accepted.policy
        if not isinstance(connection, GuardedConnection):  # serve() always makes these
            policy.release()
            return connection.respond(500, "Internal Server Error\n")
        live = Live(connection, policy, Context(connection, policy.session))
        live.ping_sent_at = guard.clock.now()
        if accepted.evict is not None:
            # evict_oldest: the oldest session of this user makes room (4409).
            self.close_session(accepted.evict, CloseCode.SESSION_REPLACED, "replaced")
            guard.sessions.remove(accepted.evict)
        if not guard.open_session(policy, live):
            # Cannot happen while the decision and this run without a pause; be safe.
            logger.info("handshake refused status=503 reason=connection cap peer=%s", peer)
            response = connection.respond(503, REJECT_BODIES[503])
            for name, value in self._headers:
                response.headers[name] = value
            return response
        connection.accepted(live, accepted.subprotocol, accepted.welcome)
        return None

    def answer_plain_http(
        self, transport: asyncio.Transport, parsed: HttpRequest | HttpResponse
    ) -> None:
        """Answer a non-GET request read by :class:`GuardedConnection`, then close."""

        async def answer() -> None:
            try:
                if isinstance(parsed, HttpRequest):
                    response = await self.routes.handle(parsed, public=True)
                else:
                    response = dataclasses.replace(
                        parsed, headers=(*self._headers, *parsed.headers)
                    )
                transport.write(render_response(response))
            except Exception:
                logger.exception("HTTP request on the WebSocket port failed")
            finally:
                transport.close()

        task = asyncio.get_running_loop().create_task(answer())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def handshake_dropped(self, peer: str) -> None:
        """Count a connection that closed before sending its handshake request."""
        self.guard.handshake_dropped(peer)

    def select_subprotocol(
        self, connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """Answer ``wsguard.v1`` when offered; never echo a bearer offer."""
        if not isinstance(connection, GuardedConnection) or connection.subprotocol_chosen is None:
            return None
        return Subprotocol(connection.subprotocol_chosen)

    async def handler(self, connection: ServerConnection) -> None:
        """Drive one upgraded connection through the per-message policy."""
        # process_request opened the session, and serve() always makes guarded
        # connections; be safe anyway.
        live = connection.take_session() if isinstance(connection, GuardedConnection) else None
        if live is None:
            await connection.close(1011, "internal error")
            return
        assert isinstance(connection, GuardedConnection)  # help mypy
        guard = self.guard
        policy, ctx = live.policy, live.context
        # The per-message path: locals only; it runs inside data_received, and
        # returns what must still be awaited only when something suspends.
        receive = policy.receive
        clock = time.perf_counter
        observe = guard.metrics.message_pipeline_seconds.observe
        count = guard.metrics.message

        def on_message(frame: str | bytes) -> Awaitable[None] | None:
            started = clock()
            decision = receive(frame)
            observe(clock() - started)
            if type(decision) is Deliver:
                message_type = decision.message_type
                count(message_type.name, "delivered")
                handler = message_type.handler
                if handler is None:
                    return None
                coro: Any = handler(ctx, decision.message)  # a coroutine, run by hand
                try:
                    yielded = coro.send(None)
                except StopIteration:
                    return None
                except ConnectionClosed:
                    return None
                except Exception as exc:
                    return self._handler_failed(connection, decision.message, exc)
                return self._resume_handler(connection, coro, yielded, decision.message)
            if type(decision) is Reply:
                count(decision.type or "-", decision.outcome)
                if decision.request_id is not None:
                    logger.info(
                        "message refused request_id=%s session=%s detail=%s",
                        decision.request_id,
                        policy.session.id,
                        decision.detail,
                    )
                return send_or_later(connection, decision.frame)
            assert isinstance(decision, Close)  # help mypy
            count("-", "closed")
            connection.discard_messages()
            return self._close(connection, policy.session, decision)

        try:
            welcome = connection.take_welcome()  # None: it left with the 101 response
            if welcome is not None:
                await send_text(connection, welcome)
                del welcome
            for hook in guard.connect_hooks:
                await hook(ctx)
            await connection.dispatch(on_message)
        except ConnectionClosed:
            pass
        finally:
            guard.close_session(policy)
            for hook in guard.disconnect_hooks:
                try:
                    await hook(ctx)
                except Exception:
                    logger.exception("disconnect hook failed session=%s", policy.session.id)

    async def _resume_handler(
        self, connection: ServerConnection, coro: Any, yielded: Any, message: Message
    ) -> None:
        """Carry on with a handler that suspended while it ran inline."""
        try:
            await Resumed(coro, yielded)
        except ConnectionClosed:
            pass
        except Exception as exc:
            pending = self._handler_failed(connection, message, exc)
            if pending is not None:
                await pending

    def _handler_failed(
        self, connection: ServerConnection, message: Message, exc: Exception
    ) -> Awaitable[None] | None:
        """Log a handler's exception; answer ``INTERNAL_ERROR``. Returns what is left to await."""
        # The client learns only that it failed; the traceback stays here.
        request_id = new_request_id()
        logger.error(
            "handler failed request_id=%s type=%s session=%s",
            request_id,
            message.type,
            message.session.id,
            exc_info=exc,
        )
        frame = error_frame(ErrorCode.INTERNAL_ERROR, request_id, message.id)
        return send_or_later(connection, frame)

    async def _close(self, connection: ServerConnection, session: Session, close: Close) -> None:
        logger.info(
            "connection closed code=%d detail=%s session=%s", close.code, close.detail, session.id
        )
        # The connection discards what the client still sends (a flood), so
        # that its closing frame is read and the close completes now.
        await connection.close(close.code, close.reason)

    # Acting on sessions from outside their handler.

    def _live(self, session_id: str) -> Live | None:
        found = self.guard.find_session(session_id)
        if found is None:
            return None
        handle = found[1]
        return handle if isinstance(handle, Live) else None

    def close_session(self, session_id: str, code: CloseCode, detail: str) -> bool:
        """Close a live session with ``code``, without waiting for the close handshake."""
        live = self._live(session_id)
        if live is None:
            return False
        live.policy.terminate()
        logger.info("closing session=%s code=%d detail=%s", session_id, code, detail)
        task = asyncio.get_running_loop().create_task(
            live.connection.close(code, CLOSE_REASONS[code])
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return True

    def close_banned(self, kind: str, key: str) -> int:
        """Close the live sessions a new ban covers with 4403; returns how many.

        Called by the guard on every ban: by an administrator, for credential
        stuffing, or for abuse (the abusive connection itself closes with 4429).
        """
        closed = 0
        for session in self.guard.sessions.all():
            live = self._live(session.id)
            if live is None or live.policy.closed:  # already closing (e.g. with 4429)
                continue
            if (kind == "user" and session.user == key) or (
                kind == "ip" and live.policy.rate_key == key
            ):
                self.close_session(session.id, CloseCode.FORBIDDEN, "banned")
                closed += 1
        return closed

    def terminate_session(self, session_id: str, *, actor: str = "admin") -> bool:
        """Close one session with 4410 and refuse its token until it expires."""
        live = self._live(session_id)
        if live is None:
            return False
        self.guard.revoke_session(live.policy.session)
        self.guard.audit("session_terminated", "warning", session=live.policy.session, actor=actor)
        return self.close_session(session_id, CloseCode.SESSION_TERMINATED, "terminated")

    def terminate_user(self, user: str, *, actor: str = "admin") -> int:
        """Close every session of ``user`` with 4410; tokens issued until now are refused."""
        self.guard.revoke_user(user)
        sessions = self.guard.sessions.by_user(user)
        for session, _ in sessions:
            self.guard.audit("session_terminated", "warning", session=session, actor=actor)
            self.close_session(session.id, CloseCode.SESSION_TERMINATED, "terminated")
        return len(sessions)

    # Timers.

    async def tick(self) -> None:
        """Run the timers once: expiry, lifetime, idle, CSRF rotation, keepalive pings."""
        guard = self.guard
        now = guard.clock.now()
        for session_id, what in guard.sessions.due(now):
            live = self._live(session_id)
            if live is None:
                continue
            if what in ("lifetime", "idle"):
                self.close_session(session_id, CloseCode.SESSION_TIMEOUT, what)
            elif what == "expired":
                self.close_session(session_id, CloseCode.TOKEN_EXPIRED, "token expired")
            elif what == "expiring":
                expires_ms = int(live.policy.session.expires_at * 1000)
                await self._push(live, "token_expiring", {"expiresAt": expires_ms})
            elif what == "rotate_csrf":
                token = live.policy.rotate_csrf()
                guard.sessions.mark_csrf_rotated(live.policy.session.id, now)
                await self._push(live, "csrf_rotated", {"csrfToken": token})
        await self._keepalive(now)
        guard.bans.prune(now)
        guard.metrics.bans_active.set(len(guard.bans))
        guard.tickets.prune(now)
        guard.revocations.prune(now)
        if self.reputation is not None:
            await asyncio.to_thread(self.reputation.maybe_reload)
            self._report_reputation()

    def _report_reputation(self) -> None:
        assert self.reputation is not None  # help mypy
        metrics = self.guard.metrics
        state = self.reputation.breaker_state
        metrics.set_circuit_state(
            "reputation",
            "open" if state == "open" else "half_open" if state == "half_open" else "closed",
        )
        failures = self.reputation.provider_failures
        if failures > self._reported_failures:
            metrics.reputation_provider_failures_total.inc(failures - self._reported_failures)
            self._reported_failures = failures

    async def _push(self, live: Live, kind: str, payload: Any) -> None:
        pending = send_or_later(live.connection, encode_frame(kind, payload))
        if pending is not None:
            await pending

    async def _keepalive(self, now: float) -> None:
        server = self.guard.config.server
        for session in self.guard.sessions.all():
            live = self._live(session.id)
            if live is None or live.connection.protocol.state is not State.OPEN:
                continue
            waiter = live.pong_waiter
            if waiter is not None and not waiter.done():
                if now - live.ping_sent_at >= server.ping_timeout:
                    live.pong_waiter = None
                    self.close_session(session.id, CloseCode.SESSION_TIMEOUT, "no pong")
                continue
            if now - live.ping_sent_at >= server.ping_interval:
                live.ping_sent_at = now
                try:
                    live.pong_waiter = asyncio.ensure_future(await live.connection.ping())
                except ConnectionClosed:
                    live.pong_waiter = None

    # Serving.

    def serve(self, host: str | None = None, port: int | None = None, **kwargs: Any) -> Server:
        """Build the ``websockets`` server with wsguard's hooks and limits.

        Prefer :func:`serve`, which also runs the timers and the HTTP API.
        Keyword arguments go to :func:`websockets.asyncio.server.serve` and may
        override its defaults, except the hooks, ``max_size`` and keepalive.
        """
        config = self.guard.config
        options: dict[str, Any] = {
            "compression": "deflate" if config.server.compression else None,
            "server_header": None,  # no version banner
            "open_timeout": config.server.open_timeout,
            "close_timeout": config.server.close_timeout,
        }
        options.update(kwargs)
        options.update(
            process_request=self.process_request,
            select_subprotocol=self.select_subprotocol,
            # A subclass per server, so that its connections report to this one.
            create_connection=type("GuardedConnection", (GuardedConnection,), {"guarded": self}),
            # The inflated size of a compressed message is bounded by this too.
            max_size=config.messages.max_message_bytes,
            origins=None,  # the guard checks Origin itself, with exact matching
            ping_interval=None,  # wsguard's tick pings, to close with 4408 rather than 1011
        )
        return websockets_serve(
            self.handler,
            config.server.host if host is None else host,
            config.server.port if port is None else port,
            **options,
        )


class GuardedService:
    """A running guarded endpoint: the WebSocket server, its timers and the HTTP API.

    Use as ``async with serve(guard, host, port) as service``; leaving the block
    shuts down: stop accepting, close every connection with 1001, within
    ``server.shutdown_timeout``.
    """

    def __init__(
        self,
        guarded: GuardedServer,
        host: str | None,
        port: int | None,
        http_port: int | None,
        kwargs: dict[str, Any],
        *,
        freeze_startup: bool = True,
    ) -> None:
        self.guarded = guarded
        self._freeze_startup = freeze_startup
        self.guard = guarded.guard
        self._host = host
        self._port = port
        self._http_port = http_port
        self._kwargs = kwargs
        self.server: Server | None = None
        self.http_server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def sockets(self) -> Any:
        assert self.server is not None  # help mypy
        return self.server.sockets

    @property
    def port(self) -> int:
        port: int = self.sockets[0].getsockname()[1]
        return port

    @property
    def http_port(self) -> int | None:
        if self.http_server is None:
            return None
        port: int = self.http_server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> GuardedService:
        self.server = await self.guarded.serve(self._host, self._port, **self._kwargs)
        if self._http_port is not None:
            host = self.guard.config.server.host if self._host is None else self._host
            api = HttpApiServer(self.guarded.routes.handle)
            ssl = self._kwargs.get("ssl")
            self.http_server = await api.start(host, self._http_port, ssl=ssl)
        self.guarded.routes.private_port = self.http_server is not None
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        if self._freeze_startup:
            freeze_startup_objects()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.guarded.tick()
            except Exception:
                logger.exception("timer tick failed")

    async def shutdown(self) -> None:
        """Stop accepting, close every connection with 1001, stop the timers and the API."""
        self.guard.shutting_down = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.http_server is not None:
            self.http_server.close()
        if self.server is not None:
            self.server.close(close_connections=True)
            try:
                async with asyncio.timeout(self.guard.config.server.shutdown_timeout):
                    await self.server.wait_closed()
            except TimeoutError:
                logger.error("shutdown deadline passed: aborting the remaining connections")
                for connection in list(self.server.connections):
                    connection.transport.abort()
        if self.http_server is not None:
            await self.http_server.wait_closed()

    async def wait_closed(self) -> None:
        assert self.server is not None  # help mypy
        await self.server.wait_closed()


def serve(
    guard: Guard,
    host: str | None = None,
    port: int | None = None,
    *,
    http_port: int | None = None,
    reputation: Reputation | None = None,
    freeze_startup: bool = True,
    **kwargs: Any,
) -> GuardedService:
    """Serve ``guard`` with ``websockets``, its timers and (with ``http_port``) the HTTP API.

    Args:
        guard: the policy.
        host: interface; ``server.host`` from the config by default.
        port: port; ``server.port`` from the config by default (0: a free one).
        http_port: port of the HTTP API; ``server.http_port`` by default; None: off.
        reputation: the block list and reputation provider, if any.
        freeze_startup: when the first server of the process starts, move the
            objects alive then out of the garbage collector's full passes (see
            :mod:`wsguard.adapters.freeze`).
        kwargs: passed to :func:`websockets.asyncio.server.serve` (``ssl=``...).
    """
    if http_port is None:
        http_port = guard.config.server.http_port
    return GuardedService(
        GuardedServer(guard, reputation),
        host,
        port,
        http_port,
        kwargs,
        freeze_startup=freeze_startup,
    )


__all__ = ["Context", "GuardedServer", "GuardedService", "serve"]
