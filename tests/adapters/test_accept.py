"""The 101 response wsguard builds: websockets' own, with its ``Date`` made once a second."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import os
import time

import pytest
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from tests.conftest import LiveServer, assert_served, make_token
from wsguard.adapters.accept import accept, http_date


def test_http_date_is_formatdate_and_kept_for_its_second() -> None:
    start = 1_764_400_000.0
    for offset in (0.0, 0.25, 0.999, 1.0, 59.5, 86_399.999, 86_400.0, 31_536_000.0):
        now = start + offset
        assert http_date(now) == email.utils.formatdate(int(now), usegmt=True)
    now = time.time()
    assert http_date() in {
        email.utils.formatdate(int(now), usegmt=True),
        email.utils.formatdate(int(now) + 1, usegmt=True),
    }


def _request(**changes: str | None) -> Request:
    fields = {
        "Host": "127.0.0.1:8765",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    fields.update(changes)  # type: ignore[arg-type]
    headers = Headers()
    for name, value in fields.items():
        if value is not None:
            headers[name] = value
    return Request("/ws", headers)


def _protocol(**options: object) -> ServerProtocol:
    return ServerProtocol(**options)  # type: ignore[arg-type]


def _settings(extension: object) -> dict[str, object]:
    """An extension's negotiated parameters (its zlib objects differ by identity)."""
    return {k: v for k, v in vars(extension).items() if k not in ("decoder", "encoder")}


def _without_date(headers: Headers) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.raw_items() if k != "Date"]


@pytest.mark.parametrize(
    ("changes", "options"),
    [
        pytest.param({}, {}, id="plain"),
        pytest.param(
            {"Sec-WebSocket-Protocol": "wsguard.v1, other"},
            {"subprotocols": [Subprotocol("wsguard.v1")]},
            id="subprotocol",
        ),
        pytest.param(
            {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"},
            {"extensions": [ServerPerMessageDeflateFactory()]},
            id="deflate",
        ),
    ],
)
def test_an_accepted_upgrade_is_answered_as_websockets_does(
    changes: dict[str, str], options: dict[str, object]
) -> None:
    request = _request(**changes)
    ours, theirs = _protocol(**options), _protocol(**options)
    mine, reference = accept(ours, request), theirs.accept(request)
    assert (mine.status_code, mine.reason_phrase) == (101, "Switching Protocols")
    assert (mine.status_code, mine.reason_phrase, mine.body) == (
        reference.status_code,
        reference.reason_phrase,
        reference.body,
    )
    assert _without_date(mine.headers) == _without_date(reference.headers)
    assert list(mine.headers.raw_items())[0][0] == "Date"
    sent = email.utils.parsedate_to_datetime(mine.headers["Date"]).timestamp()
    assert abs(sent - time.time()) <= 2
    # The protocol ends in the state websockets' accept leaves it in.
    assert ours.accept_called and theirs.accept_called
    assert [_settings(e) for e in ours.extensions] == [_settings(e) for e in theirs.extensions]
    assert ours.subprotocol == theirs.subprotocol


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"Upgrade": None}, id="no-upgrade"),
        pytest.param({"Connection": "keep-alive"}, id="no-connection-upgrade"),
        pytest.param({"Sec-WebSocket-Version": "8"}, id="bad-version"),
        pytest.param({"Sec-WebSocket-Key": "short"}, id="bad-key"),
        pytest.param({"Sec-WebSocket-Key": None}, id="no-key"),
    ],
)
def test_a_refused_upgrade_is_websockets_own_refusal(changes: dict[str, str | None]) -> None:
    request = _request(**changes)
    ours, theirs = _protocol(), _protocol()
    mine, reference = accept(ours, request), theirs.accept(request)
    assert mine.status_code == reference.status_code != 101
    assert mine.body == reference.body
    assert _without_date(mine.headers) == _without_date(reference.headers)
    assert type(ours.handshake_exc) is type(theirs.handshake_exc)


async def test_the_live_101_carries_a_current_date(live_server: LiveServer) -> None:
    port = int(live_server.url.split(":")[2].split("/")[0])
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {make_token()}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        data = await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()
    head = data.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 101")
    dates = [line[6:] for line in head.split("\r\n") if line.lower().startswith("date: ")]
    assert len(dates) == 1
    sent = email.utils.parsedate_to_datetime(dates[0]).timestamp()
    assert abs(sent - time.time()) <= 5
    await assert_served(live_server)
