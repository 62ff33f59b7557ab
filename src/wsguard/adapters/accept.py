"""The 101 response of an accepted handshake, with its ``Date`` made once a second.

``websockets`` formats the ``Date`` header with :func:`email.utils.formatdate`
for every handshake, which costs about as much as wsguard's whole credential
check on a token it has seen before. The text changes once a second, so it is
kept here for that second, as HTTP servers commonly do (RFC 9110 section 6.6.1
asks for the time of the response with a one-second resolution).

Only the success path is built here, from ``websockets``' own
:meth:`~websockets.server.ServerProtocol.process_request`: it checks the
request and negotiates the extensions and the subprotocol exactly as
``accept`` does. When it refuses, ``websockets``' own ``accept`` runs and
builds the refusal (status, text, log line, ``handshake_exc``) as always.
"""

from __future__ import annotations

import email.utils
import time

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

__all__ = ["DatedServerProtocol", "accept", "http_date"]

_accept = ServerProtocol.accept
_cached: tuple[int, str] = (-1, "")


def http_date(now: float | None = None) -> str:
    """The IMF-fixdate of ``now`` (the current time by default), as ``formatdate`` gives."""
    global _cached
    second = int(time.time() if now is None else now)
    cached_second, text = _cached
    if second != cached_second:
        text = email.utils.formatdate(second, usegmt=True)
        _cached = (second, text)
    return text


def accept(protocol: ServerProtocol, request: Request) -> Response:
    """What ``protocol.accept(request)`` returns, with a cached ``Date`` on a 101."""
    try:
        accept_header, extensions_header, protocol_header = protocol.process_request(request)
    except Exception:  # websockets builds and logs the refusal itself
        return _accept(protocol, request)
    protocol.accept_called = True
    # The headers and their order as websockets 17 writes them. The first four
    # are set as websockets' own Headers.copy() sets them: a date made here,
    # two constants and a base64 digest need no check (Headers() and a checked
    # assignment per header took 3.7 us). The negotiated ones are checked.
    date = http_date()
    headers = Headers.__new__(Headers)
    headers._dict = {  # noqa: SLF001
        "date": [date],
        "upgrade": ["websocket"],
        "connection": ["Upgrade"],
        "sec-websocket-accept": [accept_header],
    }
    headers._list = [  # noqa: SLF001
        ("Date", date),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_header),
    ]
    if extensions_header is not None:
        headers["Sec-WebSocket-Extensions"] = extensions_header
    if protocol_header is not None:
        headers["Sec-WebSocket-Protocol"] = protocol_header
    return Response(101, "Switching Protocols", headers)


class DatedServerProtocol(ServerProtocol):
    """``websockets``' server protocol, accepting with :func:`accept`.

    The guarded connection switches its protocol to this class once the guard
    accepted the handshake; nothing else differs.
    """

    def accept(self, request: Request) -> Response:
        return accept(self, request)
