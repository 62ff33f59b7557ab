"""The common frame, read and written without ``websockets``' generic machinery.

Almost every frame of a chat is one small, unfragmented, masked text frame.
``websockets`` parses each through a chain of generators and sends each through
an async context manager; together that costs more server CPU than the whole
guard pipeline (``make bench``). This module handles exactly that frame and
nothing else:

* :func:`read_text_frame` takes a complete ``FIN`` + text frame, masked, with no
  extension bits and a length within ``max_size``, and only at a frame boundary
  of ``websockets``' own parser (:func:`at_frame_boundary`). Anything else
  (control frames, fragments, partial frames, binary, oversize, unmasked) is
  left to ``websockets``, which stays the judge of every protocol error.
* :func:`write_text` writes a text frame straight to the transport when
  ``websockets`` would have written it at once (open, not paused, nothing
  queued); otherwise the caller falls back to ``connection.send``.

:data:`SUPPORTED` is False when the installed ``websockets`` is not laid out as
expected; the guarded connection then uses ``websockets`` for every frame.
"""

from __future__ import annotations

import types
from collections.abc import Generator
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.protocol import OPEN, Protocol
from websockets.streams import StreamReader

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

_FIN_TEXT = 0x81  # FIN, no RSV bits (no extension), opcode 1 (text)
_MASKED = 0x80


def _code(function: Any) -> types.CodeType | None:
    code = getattr(function, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


_PARSE = _code(getattr(Protocol, "parse", None))
_AT_EOF = _code(getattr(StreamReader, "at_eof", None))
SUPPORTED = _PARSE is not None and _AT_EOF is not None


def at_frame_boundary(protocol: Protocol) -> bool:
    """Whether ``websockets``' parser waits for the first byte of a new frame.

    True only when its read buffer is empty, no fragmented message is open and
    the innermost generator of the parser is ``Protocol.parse`` waiting in
    ``StreamReader.at_eof`` (between frames). In the middle of a frame the
    parser holds the header it already consumed, so bytes must go to it.
    """
    if protocol.reader.buffer or getattr(protocol, "current_size", 0) is not None:
        return False
    parser: Any = protocol.parser
    outer = None
    while True:
        inner = getattr(parser, "gi_yieldfrom", None)
        if inner is None:
            break
        outer, parser = parser, inner
    return (
        outer is not None
        and getattr(parser, "gi_code", None) is _AT_EOF
        and getattr(outer, "gi_code", None) is _PARSE
    )


def read_text_frame(data: bytes, start: int, max_size: int) -> tuple[bytes, int] | None:
    """The unmasked payload of the frame at ``data[start:]`` and where it ends.

    None unless that frame is complete, ``FIN`` + text without RSV bits,
    masked, with a 7- or 16-bit length of at most ``max_size``. The payload is
    not checked for UTF-8 here.
    """
    available = len(data) - start
    if available < 6 or data[start] != _FIN_TEXT:
        return None
    second = data[start + 1]
    if not second & _MASKED:
        return None  # a client must mask: websockets fails the connection
    length = second & 0x7F
    if length < 126:
        mask_at = start + 2
    elif length == 126:
        if available < 8:
            return None
        length = data[start + 2] << 8 | data[start + 3]
        mask_at = start + 4
    else:
        return None  # 64-bit lengths are beyond any message limit worth a fast path
    end = mask_at + 4 + length
    if length > max_size or end > len(data):
        return None
    return apply_mask(data[mask_at + 4 : end], data[mask_at : mask_at + 4]), end


def text_frame(payload: bytes) -> bytes:
    """An unmasked (server) text frame carrying ``payload``."""
    length = len(payload)
    if length < 126:
        return bytes((_FIN_TEXT, length)) + payload
    if length < 65536:
        return bytes((_FIN_TEXT, 126, length >> 8, length & 0xFF)) + payload
    return bytes((_FIN_TEXT, 127)) + length.to_bytes(8, "big") + payload


def write_text(connection: Connection, payload: bytes) -> bool:
    """Write a text frame now if ``websockets`` would; False: use ``connection.send``.

    ``connection.send`` writes at once too, and then waits only when the
    transport is paused or the connection is not open; those cases, and a
    fragmented send or queued protocol output, are left to it.
    """
    protocol = connection.protocol
    if (
        protocol.state is not OPEN
        or connection.paused
        or connection.send_in_progress is not None
        or protocol.extensions
        or protocol.expect_continuation_frame
        or protocol.writes
    ):
        return False
    transport = connection.transport
    if transport.is_closing():
        return False
    transport.write(text_frame(payload))
    return True


class Resumed:
    """Awaits the rest of a coroutine that was started by hand and suspended.

    ``coro.send(None)`` runs a handler without a task; when it suspends on
    ``yielded``, awaiting ``Resumed(coro, yielded)`` (in a task) carries on
    exactly as the task would have: the same future awaited, the same values
    and exceptions passed in, the coroutine's return value returned.
    """

    __slots__ = ("_coro", "_yielded")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self._coro = coro
        self._yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self._coro, self._yielded
        self._coro = self._yielded = None
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - passed on, as a task would
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


__all__ = [
    "SUPPORTED",
    "Resumed",
    "at_frame_boundary",
    "read_text_frame",
    "text_frame",
    "write_text",
]
