"""The ``websockets`` (asyncio) server adapter.

It plugs into ``websockets``' own hooks rather than forking its server:
``process_request`` runs the guard's handshake policy, ``select_subprotocol``
answers ``wsguard.v1`` (never the token-carrying offer), and the connection
handler drives :class:`~wsguard.core.connection.ConnectionPolicy` frame by frame.
``max_size`` is the message limit, so an oversized frame is never buffered
(close 1009), and ``websockets`` itself closes invalid UTF-8 with 1007.

Usage::

    async with serve(guard, "127.0.0.1", 8765) as server:
        await server.serve_forever()
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from wsguard.core.connection import new_request_id
from wsguard.core.decisions import Accept, Close, Deliver, HandshakeRequest, Message, Reply
from wsguard.core.errors import ErrorCode
from wsguard.core.frames import encode_frame, error_frame
from wsguard.core.guard import Guard, check_handlers
from wsguard.core.session import Session

logger = logging.getLogger("wsguard")

SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
)


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
        return self._connection.close_code is None and self._connection.state.name == "OPEN"

    async def send(self, kind: str, payload: Any, message_id: str | None = None) -> None:
        """Send a typed frame: ``payload`` is a dict or a msgspec Struct."""
        await self._connection.send(encode_frame(kind, payload, message_id), text=True)

    async def reply(self, message: Message, kind: str, payload: Any) -> None:
        """Send a frame that carries the client's ``id`` of ``message``."""
        await self.send(kind, payload, message.id)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.close(code, reason)


class GuardedServer:
    """Wires a :class:`Guard` into ``websockets``' server hooks.

    Args:
        guard: the policy; its message types must all have handlers.
    """

    def __init__(self, guard: Guard) -> None:
        check_handlers(guard)
        self.guard = guard
        self._accepted: weakref.WeakKeyDictionary[ServerConnection, Accept] = (
            weakref.WeakKeyDictionary()
        )

    # Hooks for websockets.

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """``websockets``' ``process_request`` hook: accept, or answer plain HTTP."""
        path, _, query = request.path.partition("?")
        handshake = HandshakeRequest(
            peer=_peer_ip(connection),
            path=path,
            query=query,
            headers=tuple((k.lower(), v) for k, v in request.headers.raw_items()),
            tls=connection.transport.get_extra_info("ssl_object") is not None,
        )
        decision = self.guard.handshake(handshake)
        if isinstance(decision, Accept):
            self._accepted[connection] = decision
            return None
        logger.info(
            "handshake refused status=%d reason=%s peer=%s",
            decision.status,
            decision.reason,
            handshake.peer,
        )
        response = connection.respond(decision.status, decision.body)
        for name, value in (*SECURITY_HEADERS, *decision.headers):
            response.headers[name] = value
        return response

    def select_subprotocol(
        self, connection: ServerConnection, subprotocols: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        """Answer ``wsguard.v1`` when offered; never echo a bearer offer."""
        accepted = self._accepted.get(connection)
        if accepted is None or accepted.subprotocol is None:
            return None
        return Subprotocol(accepted.subprotocol)

    async def handler(self, connection: ServerConnection) -> None:
        """Drive one upgraded connection through the per-message policy."""
        accepted = self._accepted.pop(connection, None)
        if accepted is None:  # process_request always stores one; be safe anyway
            await connection.close(1011, "internal error")
            return
        policy = accepted.policy
        ctx = Context(connection, policy.session)
        guard = self.guard
        try:
            await connection.send(accepted.welcome, text=True)
            for hook in guard.connect_hooks:
                await hook(ctx)
            async for frame in connection:
                decision = policy.receive(frame)
                if isinstance(decision, Deliver):
                    handler = decision.message_type.handler
                    if handler is not None:
                        await self._run_handler(handler, ctx, decision.message)
                elif isinstance(decision, Reply):
                    if decision.request_id is not None:
                        logger.info(
                            "message refused request_id=%s session=%s detail=%s",
                            decision.request_id,
                            policy.session.id,
                            decision.detail,
                        )
                    await connection.send(decision.frame, text=True)
                else:
                    await self._close(connection, policy.session, decision)
                    return
        except ConnectionClosed:
            pass
        finally:
            for hook in guard.disconnect_hooks:
                try:
                    await hook(ctx)
                except Exception:
                    logger.exception("disconnect hook failed session=%s", policy.session.id)

    async def _run_handler(self, handler: Any, ctx: Context, message: Message) -> None:
        try:
            await handler(ctx, message)
        except ConnectionClosed:
            raise
        except Exception:
            # The client learns only that it failed; the traceback stays here.
            request_id = new_request_id()
            logger.exception(
                "handler failed request_id=%s type=%s session=%s",
                request_id,
                message.type,
                message.session.id,
            )
            await ctx._connection.send(
                error_frame(ErrorCode.INTERNAL_ERROR, request_id, message.id), text=True
            )

    async def _close(self, connection: ServerConnection, session: Session, close: Close) -> None:
        logger.info(
            "connection closed code=%d detail=%s session=%s", close.code, close.detail, session.id
        )
        await connection.close(close.code, close.reason)

    # Serving.

    def serve(self, host: str | None = None, port: int | None = None, **kwargs: Any) -> Server:
        """Build the ``websockets`` server with wsguard's hooks and limits.

        Use it as ``async with guarded.serve(...) as server``. Keyword arguments
        go to :func:`websockets.asyncio.server.serve` and may override its
        defaults, except the hooks and ``max_size``.
        """
        config = self.guard.config
        options: dict[str, Any] = {
            "compression": "deflate" if config.server.compression else None,
            "server_header": None,  # no version banner
            "open_timeout": config.server.open_timeout,
            "ping_interval": config.server.ping_interval,
            "ping_timeout": config.server.ping_timeout,
            "close_timeout": config.server.close_timeout,
        }
        options.update(kwargs)
        options.update(
            process_request=self.process_request,
            select_subprotocol=self.select_subprotocol,
            # The inflated size of a compressed message is bounded by this too.
            max_size=config.messages.max_message_bytes,
            origins=None,  # the guard checks Origin itself, with exact matching
        )
        return websockets_serve(
            self.handler,
            config.server.host if host is None else host,
            config.server.port if port is None else port,
            **options,
        )


def serve(guard: Guard, host: str | None = None, port: int | None = None, **kwargs: Any) -> Server:
    """Serve ``guard`` with ``websockets``; see :meth:`GuardedServer.serve`."""
    return GuardedServer(guard).serve(host, port, **kwargs)


def _peer_ip(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return ""


__all__ = ["Context", "GuardedServer", "serve"]
