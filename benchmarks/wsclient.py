"""A minimal WebSocket client for load generation, written against asyncio's Protocol.

It costs the load generator far less per round trip than a full client does, so
that on a 2-core machine the server under test, not the generator, is the
bottleneck. It speaks just enough RFC 6455: the opening handshake (without
checking ``Sec-WebSocket-Accept``: the servers are ours), masked client frames,
unfragmented server frames, pongs for pings, and the closing handshake.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable

OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class HandshakeFailed(Exception):
    """The server answered the upgrade with something other than 101."""


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked, final frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    if size == 0:
        return header + mask
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big")
    return header + mask + masked


CLOSE_FRAME = client_frame(OP_CLOSE, (1000).to_bytes(2, "big"))


def upgrade_request(port: int, path: str, token: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient(asyncio.Protocol):
    """One connection; ``opened``, ``texts`` and ``closed`` follow its life.

    In echo mode (:meth:`start_echo`) every text frame received is counted and
    answered at once with the same prebuilt frame, from the event loop's
    callback, without a coroutine per message.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.texts: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self._close_sent = False
        self._echo_frame: bytes | None = None
        self._on_echo: Callable[[], None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeFailed("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buffer[:end]).split(b"\r\n", 1)[0]
            del buffer[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(HandshakeFailed(status.decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
            self.opened.set_result(None)
        self._frames()

    # Frames.

    def _frames(self) -> None:
        buffer = self._buffer
        while len(buffer) >= 2:
            opcode = buffer[0] & 0x0F
            size = buffer[1] & 0x7F
            start = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size = int.from_bytes(buffer[2:4], "big")
                start = 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size = int.from_bytes(buffer[2:10], "big")
                start = 10
            end = start + size
            if len(buffer) < end:
                return
            payload = bytes(buffer[start:end])
            del buffer[:end]
            self._frame(opcode, payload)

    def _frame(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if opcode == OP_TEXT:
            if self._on_echo is not None:
                self._on_echo()
                if self._echo_frame is not None:
                    transport.write(self._echo_frame)
                return
            self.texts.put_nowait(payload)
        elif opcode == OP_PING:
            transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            if not self._close_sent:
                self._close_sent = True
                transport.write(CLOSE_FRAME)

    # Commands.

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)

    def start_echo(self, frame: bytes, on_echo: Callable[[], None]) -> None:
        """Send ``frame`` and send it again on every text frame received."""
        self._echo_frame = frame
        self._on_echo = on_echo
        self.send(frame)

    def stop_echo(self) -> None:
        """Send nothing more; replies still in flight are counted, not answered."""
        self._echo_frame = None

    def close(self) -> None:
        """Start the closing handshake; :attr:`closed` completes when the server hangs up."""
        if not self._close_sent and self.transport is not None:
            self._close_sent = True
            self.transport.write(CLOSE_FRAME)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(
    port: int, token: str | None, *, path: str = "/ws", welcome: bool = False, timeout: float = 10
) -> tuple[RawClient, bytes | None]:
    """Open a connection; with ``welcome``, wait for the server's first text frame too."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, client = await loop.create_connection(RawClient, "127.0.0.1", port)
        try:
            client.send(upgrade_request(port, path, token))
            await client.opened
            first = await client.texts.get() if welcome else None
        except BaseException:
            client.abort()
            raise
    return client, first
