"""The guarded ``websockets`` connection: messages dispatched as they are read.

``websockets`` queues every message for a ``recv()`` in the handler's task:
per message a queue, a future, a task wake-up and an async iterator. Here a
message is judged and its handler started inside ``data_received``, and its
reply written at once (:mod:`wsguard.adapters.fastpath`). Only a message whose
handling has to wait (a handler awaiting I/O, a paused transport, a close)
moves to a task; later messages wait in a bounded backlog behind it, in
order, and reading pauses while the backlog is full, as ``websockets`` does.

A message runs with the connection's handler task as the current task and in
that task's ``contextvars`` context, and carries on in that task if it
suspends: to a handler, ``asyncio.timeout()``, ``current_task()`` and context
variables behave as if it ran in the handler task, as it did before.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode as WsCloseCode
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from wsguard.adapters.accept import DatedServerProtocol
from wsguard.adapters.fastpath import SUPPORTED, at_frame_boundary, read_text_frame, text_frame
from wsguard.adapters.http_api import parse_buffered
from wsguard.adapters.request import take_parsed_request
from wsguard.core.connection import ConnectionPolicy

if TYPE_CHECKING:
    from wsguard.adapters.websockets import GuardedServer, Live

logger = logging.getLogger("wsguard")

# asyncio reads a socket with recv(256 KiB): glibc serves that from mmap unless
# an earlier large free happened to raise its threshold, and then every message
# costs an mmap, a munmap and a TLB shootdown (measured: 14 us more kernel time
# per message, in some runs and not others). 64 KiB comes from the heap.
READ_CHUNK = 64 * 1024
# Messages waiting behind one whose handling suspended: reading pauses at the
# high mark and resumes at the low one (websockets' own defaults: 16 and 4).
BACKLOG_HIGH = 16
BACKLOG_LOW = 4

_process_event = ServerConnection.process_event
_send_response = ServerProtocol.send_response
# Private to asyncio, stable since 3.7; what eager tasks (3.12) do in C.
_enter_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None]
_leave_task: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None]
_enter_task = asyncio.tasks._enter_task  # noqa: SLF001
_leave_task = asyncio.tasks._leave_task  # noqa: SLF001
_data_received = ServerConnection.data_received
_TEXT, _BINARY, _CONT, _PING = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING
_TEXT_START = b"\x81"  # FIN and text: the only frame the fast path reads

# Judges one message; returns what must still be awaited, if anything.
OnMessage = Callable[[str | bytes], Awaitable[None] | None]


class GuardedConnection(ServerConnection):
    """A ``ServerConnection`` that hands whole messages to wsguard as they arrive.

    It also shows client pings to the policy: ``websockets`` answers pings
    inside its protocol and offers no hook for them; ``create_connection`` is
    its documented escape hatch, and ``process_event`` sees every frame.
    """

    policy: ConnectionPolicy | None = None
    guarded: GuardedServer | None = None
    # Bytes held until the request line shows the method; then None for a
    # WebSocket (GET) request, which goes to websockets as usual.
    _sniffed: bytearray | None = None
    _plain_http = False
    # Inline dispatch.
    _on_message: OnMessage | None = None  # set once the session is open
    _context: contextvars.Context | None = None  # the handler task's
    _backlog: deque[str | bytes] | None = None
    _busy = False  # a message's handling is suspended: later ones wait
    _discarding = False  # closing: messages are dropped
    _reading_paused = False
    _dispatcher: asyncio.Task[None] | None = None  # the handler task
    _wake: asyncio.Future[Awaitable[None] | None]  # what the dispatcher task awaits next
    _lost = False
    _failing: asyncio.Task[None] | None = None
    _fragments: list[bytes] | None = None
    _fragmented_opcode: Opcode = _TEXT
    fast_frames = 0  # frames read by the fast path (tests check that it is used)
    # The accepted handshake, from process_request to the handler.
    subprotocol_chosen: str | None = None
    _live: Live | None = None  # the session opened; the handler takes it
    _welcome: bytes | None = None  # until it is sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sniffed = bytearray()
        if isinstance(getattr(transport, "max_size", None), int):  # asyncio's own transports
            transport.max_size = READ_CHUNK  # type: ignore[attr-defined]
        # websockets' ServerConnection.connection_made, but with the handler
        # task's context kept: messages run inline in that very context, with
        # that task current, and carry on in it when they suspend.
        Connection.connection_made(self, transport)
        self._context = context = contextvars.copy_context()
        self._dispatcher = task = self.loop.create_task(self.server.handler(self), context=context)
        self.server.handler_tasks.add(task)

    # The accepted handshake.

    def accepted(self, live: Live, subprotocol: str | None, welcome: bytes) -> None:
        """Hold the opened session for the handler; send the welcome with the 101.

        Sent in the same write as the response, the welcome costs no system
        call of its own, and the client has its CSRF token at once.
        """
        self.policy = live.policy
        self._live = live
        self.subprotocol_chosen = subprotocol
        self._welcome = welcome
        # The 101 with a Date made once a second. A class rather than an
        # instance attribute: one more attribute grew every protocol's
        # __dict__ for good (1.3 KiB per idle connection, measured).
        self.protocol.__class__ = DatedServerProtocol
        # Removed again when called: no reference cycle outlives the handshake.
        self.protocol.send_response = self._send_response  # type: ignore[method-assign]

    def _send_response(self, response: Response) -> None:
        protocol = self.protocol
        del protocol.send_response
        assert isinstance(protocol, ServerProtocol)  # help mypy
        _send_response(protocol, response)
        welcome = self._welcome
        if (
            welcome is not None
            and response.status_code == 101
            and protocol.state is OPEN
            and not protocol.extensions  # compressed: websockets sends it
            and protocol.writes
        ):
            protocol.writes[-1] += text_frame(welcome)
            self._welcome = None

    def take_session(self) -> Live | None:
        """The session opened by the handshake, once: the handler owns it from now on."""
        live, self._live = self._live, None
        return live

    def take_welcome(self) -> bytes | None:
        """The welcome frame if it did not leave with the 101 response, once."""
        welcome, self._welcome = self._welcome, None
        return welcome

    # Reading.

    def data_received(self, data: bytes) -> None:
        """Route non-GET requests (``POST /auth/ticket``, admin) to wsguard's routes.

        ``websockets`` parses only ``GET``; everything else is read here, with
        the same bounds as the HTTP API port, and answered on this port.
        """
        if self._plain_http:
            if self._sniffed is not None:  # still reading the request
                self._sniffed += data
                self._answer_plain_http()
            return  # answered: whatever follows is never a WebSocket handshake
        sniffed = self._sniffed
        if sniffed is None:
            self._receive(data)
            return
        sniffed += data
        if len(sniffed) < 4:
            return
        if sniffed[:4] == b"GET ":
            self._sniffed = None
            # From now on the transport calls the frame reader directly: no
            # sniffing layer left on the per-message path.
            self.data_received = self._receive  # type: ignore[method-assign]
            # A request that arrived whole is parsed in one pass; websockets
            # parses anything else (see wsguard.adapters.request).
            rest = take_parsed_request(self.protocol, sniffed)
            _data_received(self, bytes(sniffed) if rest is None else rest)
            return
        self._plain_http = True
        self._answer_plain_http()

    def _receive(self, data: bytes) -> None:
        """Read whole text frames here; everything else goes to ``websockets``."""
        protocol = self.protocol
        if (
            SUPPORTED
            and data[:1] == _TEXT_START  # a close or ping skips the checks below
            and protocol.state is OPEN
            and not self._discarding
            and not protocol.extensions
            and at_frame_boundary(protocol)
        ):
            max_size = protocol.max_message_size
            if max_size is None:
                max_size = len(data)
            offset, end = 0, len(data)
            while True:
                frame = read_text_frame(data, offset, max_size)
                if frame is None:
                    break
                payload, offset = frame
                self.fast_frames += 1
                self._text(payload)
                if offset == end:
                    return
                if protocol.state is not OPEN or self._discarding:
                    break
            if offset:
                data = data[offset:]
        _data_received(self, data)

    def _answer_plain_http(self) -> None:
        assert self._sniffed is not None and self.guarded is not None  # help mypy
        transport = self.transport
        tls = transport.get_extra_info("ssl_object") is not None
        # No copy of the buffer per chunk: a client trickling bytes one at a time
        # costs a bounded search per chunk, not a growing copy.
        parsed = parse_buffered(self._sniffed, peer_ip(self), tls)
        if parsed is None:
            return
        self._sniffed = None  # stop buffering; the answer is on its way
        self.guarded.answer_plain_http(transport, parsed)

    def connection_lost(self, exc: Exception | None) -> None:
        # No request at all by the time the socket went: a handshake that never
        # completed (open_timeout, or a client that vanished). Count it, and
        # against the peer's attempt budget, so that slow-loris costs a budget.
        if self.request is None and not self._plain_http and self.guarded is not None:
            self.guarded.handshake_dropped(peer_ip(self))
        self.__dict__.pop("data_received", None)  # the bound method refers back to self
        protocol = self.protocol.__dict__
        protocol.pop("send_response", None)
        # websockets binds the select_subprotocol hook as a closure over this
        # connection: a reference cycle that only the garbage collector would
        # free (measured: 30 us of collection per handshake under load).
        protocol.pop("select_subprotocol", None)
        # asyncio's socket transport keeps a bound method of itself for reading
        # (``_read_ready_cb``): a cycle that left the transport, its socket and
        # its extra info to the collector. Closed, it reads no more.
        transport = self.transport
        if getattr(transport, "_read_ready_cb", None) is not None and transport.is_closing():
            transport._read_ready_cb = None  # type: ignore[attr-defined]  # noqa: SLF001
        if self._live is not None and self.guarded is not None:
            # Accepted, but the upgrade did not complete: the handler never ran.
            self.guarded.guard.close_session(self._live.policy)
            self._live = None
        self._lost = True
        super().connection_lost(exc)
        # Wake the dispatcher to finish: what was read before the close is still handled.
        if self._on_message is not None and not self._busy and not self._wake.done():
            self._wake.set_result(None)

    def process_event(self, event: Any) -> None:
        if type(event) is Frame:
            opcode = event.opcode
            if opcode is _TEXT or opcode is _BINARY or opcode is _CONT:
                self._data_frame(event)
                return
            if opcode is _PING and self.policy is not None:
                close = self.policy.receive_ping()
                if close is not None:
                    self._fail(close.code, close.reason)
        _process_event(self, event)

    def _data_frame(self, frame: Frame) -> None:
        """A data frame parsed by ``websockets``, which checked its sequence and size."""
        if self._discarding:
            return
        opcode, data = frame.opcode, bytes(frame.data)
        if opcode is _CONT:
            assert self._fragments is not None  # websockets refuses a stray continuation
            self._fragments.append(data)
            if not frame.fin:
                return
            data, opcode = b"".join(self._fragments), self._fragmented_opcode
            self._fragments = None
        elif not frame.fin:
            self._fragments, self._fragmented_opcode = [data], opcode
            return
        if opcode is _TEXT:
            self._text(data)
        else:
            self._message(data)

    def _text(self, payload: bytes) -> None:
        try:
            text = payload.decode()
        except UnicodeDecodeError as exc:
            # What websockets does with invalid UTF-8 in a text message.
            self._fail(WsCloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            return
        self._message(text)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection as ``websockets`` does in ``recv``, from a callback.

        Through ``send_context``: the close frame is written at once, and the
        transport is aborted if the client has not closed within
        ``close_timeout``.
        """
        self.discard_messages()
        if self._failing is None:
            self._failing = self.loop.create_task(self._fail_now(code, reason))

    async def _fail_now(self, code: int, reason: str) -> None:
        try:
            async with self.send_context():
                self.protocol.fail(code, reason)
        except ConnectionClosed:
            pass

    # Dispatching.

    def _message(self, message: str | bytes) -> None:
        on_message = self._on_message
        if self._busy or on_message is None:
            backlog = self._backlog
            if backlog is None:  # made on first use: most connections never need one
                backlog = self._backlog = deque()
            backlog.append(message)
            if len(backlog) >= BACKLOG_HIGH and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        dispatcher = self._dispatcher
        assert dispatcher is not None and self._context is not None  # set in connection_made
        if dispatcher.done():  # closed: nothing is dispatched any more
            return
        # The dispatcher task is the current task while the message runs here,
        # so that asyncio.timeout(), current_task() and cancellation in a
        # handler refer to the task that carries on if the handler suspends.
        loop = self.loop
        try:
            _enter_task(loop, dispatcher)
        except RuntimeError:  # called from inside a task: let the handler task run it
            self._busy = True
            if self._backlog is None:
                self._backlog = deque()
            self._backlog.append(message)
            self._wake.set_result(None)
            return
        try:
            pending = self._context.run(on_message, message)
        except Exception:  # the server's dispatch catches handler errors; be safe anyway
            logger.exception("message dispatch failed")
            self.discard_messages()
            self.transport.abort()
            return
        finally:
            _leave_task(loop, dispatcher)
        if pending is not None:
            self._busy = True
            self._wake.set_result(pending)

    async def _dispatch_forever(self) -> None:
        """The dispatcher task: completes what suspended, then what waited behind it."""
        while not self._lost:
            pending = await self._wake
            try:
                if pending is not None:
                    await pending
                backlog = self._backlog
                while backlog and not self._discarding:
                    assert backlog is not None  # help mypy
                    message = backlog.popleft()
                    if self._reading_paused and len(backlog) <= BACKLOG_LOW:
                        self._resume_reading()
                    assert self._on_message is not None  # set before this task starts
                    pending = self._on_message(message)
                    if pending is not None:
                        await pending
            except Exception:  # the server's dispatch catches handler errors; be safe anyway
                logger.exception("message dispatch failed")
                self.discard_messages()
                self.transport.abort()
            finally:
                self._wake = self.loop.create_future()
                self._busy = False
                if self._reading_paused:
                    self._resume_reading()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def discard_messages(self) -> None:
        """Drop every message from now on (the connection is closing)."""
        self._discarding = True
        self._backlog = None
        self._fragments = None
        if self._reading_paused:  # the client's closing frame must still be read
            self._resume_reading()

    async def dispatch(self, on_message: OnMessage) -> None:
        """Dispatch messages to ``on_message`` until the connection is closed.

        Called by the handler task once its session is open, and runs in it.
        Messages that arrived earlier go first.
        """
        assert asyncio.current_task() is self._dispatcher  # the handler task
        self._on_message = on_message
        self._wake = self.loop.create_future()
        if self._backlog:
            self._busy = True
            self._wake.set_result(None)
        try:
            await self._dispatch_forever()
        finally:
            # The closure refers back to this connection: without this, every
            # connection would be a reference cycle left to the garbage collector.
            self._on_message = None


def peer_ip(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and address:
        return str(address[0])
    return ""


__all__ = ["BACKLOG_HIGH", "BACKLOG_LOW", "READ_CHUNK", "GuardedConnection", "peer_ip"]
