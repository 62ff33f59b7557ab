"""The opening handshake's request, parsed in one pass when it arrived whole.

``websockets`` reads the request line by line through generators: 18 us for a
typical upgrade with a bearer token, measured here, against about 5 for the
same checks made with two regular expressions over the whole header block.

This parser is deliberately narrower than ``websockets``': it accepts only a
request that ``websockets`` would accept, and returns exactly the
:class:`~websockets.http11.Request` that ``websockets`` would build (a
differential test holds it to that). Anything else returns ``None`` and the
bytes go to ``websockets`` as before, so every refusal, limit and error message
stays ``websockets``' own:

* the header block not yet complete in the first read (a slow client);
* a method other than ``GET``, a protocol other than ``HTTP/1.1`` or
  ``HTTP/1.0``, a path with bytes outside ``!`` to ``~``;
* a header line that is not ``token ":" value`` with ``websockets``' own
  character classes, a bare CR or LF, obsolete line folding;
* more headers than ``websockets`` allows, or a block as long as its line limit;
* ``Transfer-Encoding`` or ``Content-Length`` (``websockets`` decides on those).
"""

from __future__ import annotations

import re
from collections.abc import Generator

from websockets import http11
from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

__all__ = ["parse_request", "take_parsed_request"]

_END = b"\r\n\r\n"
# Matched on the header block decoded as ISO-8859-1, as websockets decodes
# header values: one character per byte, and no decoding per header.
_REQUEST_LINE = re.compile(r"GET ([\x21-\x7e]+) (HTTP/1\.[01])(?=\r\n|\Z)")
# websockets' _token_re and _value_re; a value holds no CR or LF, so each match
# is exactly one line. Greedy, and stripped afterwards as websockets strips it:
# a lazy value took 19 us on a bearer token, testing the line's end at each byte.
_HEADER = re.compile(r"\r\n([-!#$%&'*+.^_`|~0-9a-zA-Z]+):([\x09\x20-\x7e\x80-\xff]*)(?=\r\n|\Z)")


def parse_request(data: bytes | bytearray) -> tuple[Request, int] | None:
    """The request at the start of ``data`` and where what follows it starts.

    Returns:
        ``(request, offset)``; ``None`` when ``websockets`` must parse ``data``
        itself (see the module docstring).
    """
    end = data.find(_END)
    if end < 0 or end + 4 > http11.MAX_LINE_LENGTH:
        return None
    head = data[:end].decode("iso-8859-1")
    line = _REQUEST_LINE.match(head)
    if line is None:
        return None
    pairs = _HEADER.findall(head, line.end())
    # Matches never overlap and each holds one CRLF, at its start: as many
    # matches as CRLFs means that every line matched, whole.
    if len(pairs) != head.count("\r\n") or len(pairs) > http11.MAX_NUM_HEADERS:
        return None
    items = [(name, value.strip(" \t")) for name, value in pairs]
    by_name: dict[str, list[str]] = {}
    for name, value in items:
        by_name.setdefault(name.lower(), []).append(value)
    if "transfer-encoding" in by_name or "content-length" in by_name:
        return None
    # What Headers.set_insecure does per header, set as websockets' own copy()
    # sets it; without Headers.__init__, which took 1 us.
    headers = Headers.__new__(Headers)
    headers._dict = by_name  # noqa: SLF001
    headers._list = items  # noqa: SLF001
    path, protocol = line.groups()
    return Request(path, headers, "GET", protocol), end + 4


def _after_request(protocol: ServerProtocol, request: Request) -> Generator[None]:
    # What ServerProtocol.parse does once Request.parse returned (websockets 17).
    protocol.events.append(request)
    yield from Protocol.parse(protocol)


def take_parsed_request(protocol: ServerProtocol, data: bytes | bytearray) -> bytes | None:
    """Parse the request in ``data`` for ``protocol``, which has read nothing yet.

    On success the protocol's parser is left where ``websockets``' own would be
    after the request; the caller passes the returned rest of ``data`` (frames
    the client sent early, usually nothing) to ``receive_data`` as usual, which
    also hands the request to the connection.

    Returns:
        The bytes after the request, or ``None`` when ``websockets`` must parse
        all of ``data`` itself.
    """
    if protocol.debug or protocol.reader.buffer:  # websockets logs each header when debugging
        return None
    parsed = parse_request(data)
    if parsed is None:
        return None
    request, offset = parsed
    protocol.parser.close()  # waiting for the request line: nothing to undo
    protocol.parser = _after_request(protocol, request)
    return bytes(data[offset:])
