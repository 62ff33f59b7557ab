"""A minimal HTTP/1.1 server for wsguard's own endpoints.

It serves wsguard's routes on the optional HTTP API port (``server.http_port``),
for example to keep the admin API off the public port. The same routes answer on
the WebSocket port; :func:`parse_buffered` is shared by both.

One request per connection (``Connection: close``), a bounded head and body, and
a deadline per request: this server faces the same clients as the WebSocket
endpoint and must not be a cheaper way to tie up the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

from wsguard.core.decisions import first_header

logger = logging.getLogger("wsguard.http")

MAX_HEAD_BYTES = 8192
MAX_BODY_BYTES = 16384
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A parsed request: method, path (no query), query, lower-case headers, body, peer."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    peer: str
    tls: bool = False

    def header(self, name: str) -> str | None:
        """The first value of a header, or None. ``name`` must be lower case."""
        return first_header(self.headers, name)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response; security headers are added by the router."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Router = Callable[[HttpRequest], Awaitable[HttpResponse]]


def _render(response: HttpResponse) -> bytes:
    reason = HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def _parse_head(head: bytes) -> tuple[str, str, tuple[tuple[str, str], ...]] | None:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        return None
    request_line, *header_lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, _ = parts
    if not method.isalpha() or not target.startswith("/"):
        return None
    headers: list[tuple[str, str]] = []
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        headers.append((name.lower(), value.strip()))
    return method.upper(), target, tuple(headers)


def parse_buffered(
    buffer: bytes | bytearray, peer: str, tls: bool
) -> HttpRequest | HttpResponse | None:
    """Parse a whole request from bytes received so far.

    Returns:
        The request; an error response for a malformed or oversized one; or None
        when more bytes are needed.
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            return HttpResponse(431, b"Request Header Fields Too Large\n")
        return None
    parsed = _parse_head(bytes(buffer[:end]))
    if parsed is None:
        return HttpResponse(400, b"Bad Request\n")
    method, target, headers = parsed
    if any(k == "transfer-encoding" for k, _ in headers):
        return HttpResponse(411, b"Length Required\n")
    length_text = next((v for k, v in headers if k == "content-length"), "0")
    if not length_text.isdigit():
        return HttpResponse(400, b"Bad Request\n")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        return HttpResponse(413, b"Payload Too Large\n")
    body = buffer[end + 4 : end + 4 + length]
    if len(body) < length:
        return None
    path, _, query = target.partition("?")
    return HttpRequest(method, path, query, headers, bytes(body), peer, tls)


def render_response(response: HttpResponse) -> bytes:
    """The response as bytes on the wire (``Connection: close``)."""
    return _render(response)


class HttpApiServer:
    """Serves ``router`` on a TCP port, one request per connection.

    Args:
        router: the coroutine that answers a request.
    """

    def __init__(self, router: Router) -> None:
        self._router = router

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        tls = writer.get_extra_info("ssl_object") is not None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                response = await self._read_and_route(reader, peer_ip, tls)
            writer.write(_render(response))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            logger.exception("HTTP API request failed")
            try:
                writer.write(_render(HttpResponse(500, b"Internal Server Error\n")))
                await writer.drain()
            except ConnectionError:
                pass
        finally:
            writer.close()

    async def _read_and_route(
        self, reader: asyncio.StreamReader, peer: str, tls: bool
    ) -> HttpResponse:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return HttpResponse(431, b"Request Header Fields Too Large\n")
        parsed = _parse_head(head[:-4])
        if parsed is None:
            return HttpResponse(400, b"Bad Request\n")
        method, target, headers = parsed
        length_text = next((v for k, v in headers if k == "content-length"), "0")
        if any(k == "transfer-encoding" for k, _ in headers):
            return HttpResponse(411, b"Length Required\n")
        if not length_text.isdigit():
            return HttpResponse(400, b"Bad Request\n")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            return HttpResponse(413, b"Payload Too Large\n")
        body = await reader.readexactly(length) if length else b""
        path, _, query = target.partition("?")
        return await self._router(HttpRequest(method, path, query, headers, body, peer, tls))

    async def start(self, host: str, port: int, **kwargs: object) -> asyncio.Server:
        """Listen on ``host:port``; extra keyword arguments go to ``asyncio.start_server``."""
        return await asyncio.start_server(
            self.handle,
            host,
            port,
            limit=MAX_HEAD_BYTES,
            **kwargs,  # type: ignore[arg-type]
        )
