"""Attacks after the upgrade, against a real server on 127.0.0.1.

Each test performs the attack, checks the error or close code of PROTOCOL.md,
then checks that a legitimate client on the same server is still served.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import LiveServer, assert_served, exchange, make_config, make_token, welcome
from wsguard.adapters.websockets import Context, serve
from wsguard.config import GuardConfig, ServerConfig
from wsguard.core.decisions import Message
from wsguard.core.guard import Guard
from wsguard.core.types import FileUploadPayload


class Crash(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class Blob(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    data: dict[str, Any] = {}


@pytest.fixture
async def app_server(guard_factory: Callable[..., Guard]) -> AsyncIterator[LiveServer]:
    """The demo plus a file_upload type, a handler that crashes, and a free-form type."""
    guard = guard_factory()

    @guard.message("file_upload", schema=FileUploadPayload, roles={"user"})
    async def upload(ctx: Context, message: Message) -> None:
        await ctx.reply(message, "file_ok", {"name": message.payload.name})

    @guard.message("crash", schema=Crash)
    async def crash(ctx: Context, message: Message) -> None:
        raise RuntimeError("secret internal detail /srv/app/db.py")

    @guard.message("blob", schema=Blob)
    async def blob(ctx: Context, message: Message) -> None:
        await ctx.reply(message, "blob", {"data": message.payload.data})

    async with serve(guard, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield LiveServer(guard, f"ws://127.0.0.1:{port}/ws")


async def _session(server: LiveServer, roles: tuple[str, ...] = ("user",)) -> tuple[Any, str]:
    ws = await server.connect(make_token("alice", roles=roles))
    info = await welcome(ws)
    return ws, info["csrfToken"]


async def _closed_with(ws: Any) -> int:
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(5):
            await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code


def _chat(csrf: str, text: Any = "hi", **extra: Any) -> dict[str, Any]:
    return {"type": "chat", "id": "m-1", "payload": {"text": text}, "csrfToken": csrf, **extra}


def _error(reply: dict[str, Any], code: str) -> dict[str, Any]:
    assert reply["type"] == "error", reply
    assert reply["payload"]["code"] == code, reply
    assert len(reply["payload"]["requestId"]) >= 16
    payload: dict[str, Any] = reply["payload"]
    return payload


# Frames and sizes.


async def test_oversized_frame_closes_1009(live_server: LiveServer) -> None:
    """A 100 KB frame is never buffered: close 1009."""
    ws, csrf = await _session(live_server)
    await ws.send(json.dumps(_chat(csrf, "a" * 100_000)))
    assert await _closed_with(ws) == 1009
    await assert_served(live_server)


async def test_invalid_utf8_closes_1007(live_server: LiveServer) -> None:
    """A text frame holding invalid UTF-8: close 1007."""
    ws, _ = await _session(live_server)
    await ws.send(b'{"type": "chat", "payload": {"text": "\xff\xfe"}}', text=True)
    assert await _closed_with(ws) == 1007
    await assert_served(live_server)


async def test_binary_frame_closes_1003(live_server: LiveServer) -> None:
    """Binary frames are refused where only text is accepted: close 1003."""
    ws, _ = await _session(live_server)
    await ws.send(b"\x00\x01binary")
    assert await _closed_with(ws) == 1003
    await assert_served(live_server)


async def test_compressed_bomb_closes_1009(guard_factory: Callable[..., Guard]) -> None:
    """With permessage-deflate on, a small frame inflating past the limit closes 1009."""
    base = make_config()
    config = GuardConfig(jwt=base.jwt, origins=base.origins, server=ServerConfig(compression=True))
    guard = guard_factory(config)
    async with serve(guard, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        live = LiveServer(guard, f"ws://127.0.0.1:{port}/ws")
        ws = await live.connect(make_token(), compression="deflate")
        info = await welcome(ws)
        await ws.send(json.dumps(_chat(info["csrfToken"], "a" * 2_000_000)))
        assert await _closed_with(ws) == 1009
        await assert_served(live)


# Envelope.


@pytest.mark.parametrize(
    "frame",
    [
        "[1, 2, 3]",
        '"just a string"',
        "{not json",
        '{"type": "chat", "payload": {"text": "x"}, "extra": 1}',
        '{"type": "chat", "type": "health-check", "payload": {}}',
        '{"type": "chat", "payload": {"text": "a", "text": "b"}}',
        '{"type": "chat", "id": "bad id with spaces", "payload": {"text": "x"}}',
        '{"type": "chat", "id": "' + "x" * 65 + '", "payload": {"text": "x"}}',
        '{"type": "chat", "payload": {"text": NaN}}',
        '{"payload": {"text": "x"}}',
    ],
    ids=[
        "array",
        "string",
        "broken",
        "unknown-key",
        "dup-top",
        "dup-nested",
        "bad-id",
        "long-id",
        "nan",
        "no-type",
    ],
)
async def test_malformed_envelopes_get_invalid_message(live_server: LiveServer, frame: str) -> None:
    """Each malformed envelope gets INVALID_MESSAGE and the connection stays usable."""
    ws, csrf = await _session(live_server)
    await ws.send(frame)
    error = _error(json.loads(await ws.recv()), "INVALID_MESSAGE")
    assert error["message"] == "Invalid message"
    reply = await exchange(ws, _chat(csrf, "after"))
    assert reply["payload"]["text"] == "after"
    await ws.close()
    await assert_served(live_server)


async def test_nesting_33_deep_is_refused(app_server: LiveServer) -> None:
    """32 levels pass; 33 get INVALID_MESSAGE (the envelope is level 1)."""
    ws, csrf = await _session(app_server)

    def nested(levels: int) -> Any:
        value: Any = 1
        for _ in range(levels):
            value = [value]
        return value

    # envelope (1) > payload (2) > data (3) > key "k" holds the lists.
    ok = {"type": "blob", "payload": {"data": {"k": nested(29)}}, "csrfToken": csrf}
    reply = await exchange(ws, ok)
    assert reply["type"] == "blob"
    bad = {"type": "blob", "payload": {"data": {"k": nested(30)}}, "csrfToken": csrf}
    _error(await exchange(ws, bad), "INVALID_MESSAGE")
    await ws.send("[" * 30_000 + "]" * 30_000)
    _error(json.loads(await ws.recv()), "INVALID_MESSAGE")
    await ws.close()
    await assert_served(app_server)


async def test_timestamp_skew_is_refused(live_server: LiveServer) -> None:
    """A timestamp 301 s off is refused; one 10 s off passes."""
    ws, csrf = await _session(live_server)
    now_ms = int(time.time() * 1000)
    _error(await exchange(ws, _chat(csrf, timestamp=now_ms - 301_000)), "INVALID_MESSAGE")
    reply = await exchange(ws, _chat(csrf, timestamp=now_ms - 10_000))
    assert reply["type"] == "chat"
    await ws.close()
    await assert_served(live_server)


async def test_huge_timestamp_is_refused_and_the_connection_kept(live_server: LiveServer) -> None:
    """A 400-digit timestamp (beyond any float) gets INVALID_MESSAGE, not an aborted socket."""
    ws, csrf = await _session(live_server)
    for sign in (1, -1):
        _error(await exchange(ws, _chat(csrf, timestamp=sign * 10**400)), "INVALID_MESSAGE")
    reply = await exchange(ws, _chat(csrf, timestamp=int(time.time() * 1000)))
    assert reply["type"] == "chat"
    await ws.close()
    await assert_served(live_server)


async def test_unknown_type(live_server: LiveServer) -> None:
    """An unregistered type gets UNKNOWN_TYPE."""
    ws, csrf = await _session(live_server)
    reply = await exchange(
        ws, {"type": "admin_shell", "id": "u-1", "payload": {}, "csrfToken": csrf}
    )
    assert reply["id"] == "u-1"
    _error(reply, "UNKNOWN_TYPE")
    await ws.close()
    await assert_served(live_server)


# CSRF and roles.


async def test_csrf_missing_wrong_and_other_sessions(live_server: LiveServer) -> None:
    """A missing, wrong, or other session's CSRF token gets CSRF_INVALID."""
    ws, csrf = await _session(live_server)
    other, _ = await _session(live_server)
    message = _chat(csrf)
    del message["csrfToken"]
    _error(await exchange(ws, message), "CSRF_INVALID")
    _error(await exchange(ws, _chat(csrf[:-2] + "xx")), "CSRF_INVALID")
    _error(await exchange(other, _chat(csrf)), "CSRF_INVALID")  # another session's token
    # Two failures (score 40) stay under the restrict threshold (50).
    assert (await exchange(ws, _chat(csrf)))["type"] == "chat"
    await ws.close()
    await other.close()
    await assert_served(live_server)


async def test_health_check_is_csrf_exempt(live_server: LiveServer) -> None:
    """health-check needs no CSRF token and answers status and serverTime."""
    ws, _ = await _session(live_server)
    reply = await exchange(ws, {"type": "health-check", "id": "h-1"})
    assert reply["type"] == "health-check" and reply["id"] == "h-1"
    assert reply["payload"]["status"] == "ok"
    assert abs(reply["payload"]["serverTime"] - time.time() * 1000) < 5000
    await ws.close()


async def test_role_not_allowed_is_forbidden(live_server: LiveServer) -> None:
    """A token without the type's role gets FORBIDDEN."""
    ws, csrf = await _session(live_server, roles=("guest",))
    _error(await exchange(ws, _chat(csrf)), "FORBIDDEN")
    await ws.close()
    await assert_served(live_server)


# Payloads and sanitization.


async def test_schema_failure_names_path_not_value(live_server: LiveServer) -> None:
    """INVALID_PAYLOAD names the field's path, never its value."""
    ws, csrf = await _session(live_server)
    error = _error(await exchange(ws, _chat(csrf, {"evil": "SENTINEL-VALUE"})), "INVALID_PAYLOAD")
    assert error["path"] == "$.payload.text"
    assert "SENTINEL" not in json.dumps(error)
    missing = _chat(csrf)
    missing["payload"] = {}
    assert _error(await exchange(ws, missing), "INVALID_PAYLOAD")["path"] == "$.payload.text"
    await ws.close()
    await assert_served(live_server)


async def test_prototype_pollution_keys_are_removed(app_server: LiveServer) -> None:
    """__proto__, constructor and prototype keys vanish at every depth."""
    ws, csrf = await _session(app_server)
    data = {
        "__proto__": {"isAdmin": True},
        "constructor": {"prototype": {"isAdmin": True}},
        "nested": [{"prototype": 1, "keep": "yes"}],
        "name": "ok",
    }
    reply = await exchange(ws, {"type": "blob", "payload": {"data": data}, "csrfToken": csrf})
    assert reply["payload"]["data"] == {"nested": [{"keep": "yes"}], "name": "ok"}
    chat = _chat(csrf, "x")
    chat["payload"]["__proto__"] = {"isAdmin": True}
    assert (await exchange(ws, chat))["payload"]["text"] == "x"
    await ws.close()
    await assert_served(app_server)


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e/secret",
        "..\\..\\windows\\win.ini",
        "\uff0e\uff0e/etc/passwd",
        "a\x00.txt",
        "/etc/passwd",
        "C:\\boot.ini",
    ],
)
async def test_path_traversal_in_file_names_is_refused(app_server: LiveServer, name: str) -> None:
    """File names that could escape a directory get INVALID_PAYLOAD."""
    ws, csrf = await _session(app_server)
    message = {
        "type": "file_upload",
        "payload": {"name": name, "size": 10},
        "csrfToken": csrf,
    }
    error = _error(await exchange(ws, message), "INVALID_PAYLOAD")
    assert error["path"] == "$.payload.name"
    ok = {
        "type": "file_upload",
        "payload": {"name": "reports/q3.pdf", "size": 10},
        "csrfToken": csrf,
    }
    assert (await exchange(ws, ok))["payload"] == {"name": "reports/q3.pdf"}
    await ws.close()
    await assert_served(app_server)


@pytest.mark.parametrize(
    "text, banned",
    [
        ("<img src=x onerror=alert(1)>", "onerror"),
        ("<script>alert(1)</script>hello", "<script"),
        ('<a href="javascript:alert(1)">x</a>', "javascript:"),
    ],
)
async def test_html_is_cleaned(live_server: LiveServer, text: str, banned: str) -> None:
    """Script-bearing markup in an HTML field is cleaned before anyone sees it."""
    ws, csrf = await _session(live_server)
    reply = await exchange(ws, _chat(csrf, text))
    assert reply["type"] == "chat"
    assert banned not in reply["payload"]["text"].lower()
    assert (await exchange(ws, _chat(csrf, "<b>bold</b>")))["payload"]["text"] == "<b>bold</b>"
    await ws.close()
    await assert_served(live_server)


async def test_simple_markup_is_cleaned_as_nh3_would(live_server: LiveServer) -> None:
    """Simple markup takes wsguard's own path (no nh3) and gets nh3's output; markup
    one step outside it (an event handler, a javascript: link, a bare tag) still
    comes out inert, and the connection goes on."""
    ws, csrf = await _session(live_server)
    simple = '<p>see <a href="https://example.com/a">this</a> &amp; <i>that</i></p>'
    reply = await exchange(ws, _chat(csrf, simple))
    assert reply["payload"]["text"] == (
        '<p>see <a href="https://example.com/a" rel="noopener noreferrer">this</a>'
        " &amp; <i>that</i></p>"
    )
    for attack in (
        '<p>see <a href="https://example.com/a" onclick="alert(1)">this</a></p>',
        '<p>see <a href="javascript:alert(1)">this</a></p>',
        "<p>see <b onmouseover=alert(1)>this</b></p>",
        "<p>see <svg/onload=alert(1)>this</p>",
    ):
        cleaned = (await exchange(ws, _chat(csrf, attack)))["payload"]["text"].lower()
        assert "onclick" not in cleaned and "javascript:" not in cleaned
        assert "onmouseover" not in cleaned and "onload" not in cleaned and "<svg" not in cleaned
    await ws.close()
    await assert_served(live_server)


async def test_control_and_bidi_characters_are_refused(live_server: LiveServer) -> None:
    """Control characters and bidi overrides in strings get INVALID_PAYLOAD."""
    ws, csrf = await _session(live_server)
    for text in ("a\x07b", "admin\u202egnp.exe"):
        error = _error(await exchange(ws, _chat(csrf, text)), "INVALID_PAYLOAD")
        assert error["path"] == "$.payload.text"
    reply = await exchange(ws, _chat(csrf, "cafe\u0301\tok"))
    assert reply["payload"]["text"] == "caf\u00e9\tok"
    await ws.close()
    await assert_served(live_server)


# Handlers and the demo.


async def test_handler_exception_gives_internal_error_and_keeps_connection(
    app_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The client gets INTERNAL_ERROR with a request id; the detail stays in the log."""
    ws, csrf = await _session(app_server)
    reply = await exchange(ws, {"type": "crash", "id": "c-9", "payload": {}, "csrfToken": csrf})
    error = _error(reply, "INTERNAL_ERROR")
    assert reply["id"] == "c-9"
    assert "secret internal detail" not in json.dumps(reply)
    assert error["requestId"] in caplog.text
    assert "secret internal detail" in caplog.text
    assert (await exchange(ws, _chat(csrf)))["type"] == "chat"
    await ws.close()


async def test_broadcast_names_sender_by_token_subject(live_server: LiveServer) -> None:
    """Everyone in the room gets the message from the token's sub; only the sender gets the id."""
    alice = await live_server.connect(make_token("alice"))
    bob = await live_server.connect(make_token("bob"))
    alice_csrf = (await welcome(alice))["csrfToken"]
    await welcome(bob)
    message = _chat(alice_csrf, "hello room")
    message["payload"]["from"] = "bob"  # a forged sender is refused by the schema
    _error(await exchange(alice, message), "INVALID_PAYLOAD")
    await alice.send(json.dumps(_chat(alice_csrf, "hello room")))
    mine = json.loads(await alice.recv())
    theirs = json.loads(await bob.recv())
    assert mine["id"] == "m-1" and "id" not in theirs
    assert (
        mine["payload"]
        == theirs["payload"]
        == {
            "room": "general",
            "text": "hello room",
            "from": "alice",
        }
    )
    await alice.close()
    await bob.close()


async def test_rooms_are_separate(live_server: LiveServer) -> None:
    """A message to another room reaches its members and not general's."""
    alice = await live_server.connect(make_token("alice"))
    bob = await live_server.connect(make_token("bob"))
    alice_csrf = (await welcome(alice))["csrfToken"]
    bob_csrf = (await welcome(bob))["csrfToken"]
    await exchange(bob, {**_chat(bob_csrf, "join"), "payload": {"text": "join", "room": "ops"}})
    await alice.send(
        json.dumps({**_chat(alice_csrf), "payload": {"text": "secret", "room": "ops"}})
    )
    assert json.loads(await alice.recv())["payload"]["room"] == "ops"
    assert json.loads(await bob.recv())["payload"]["text"] == "secret"
    await alice.send(json.dumps(_chat(alice_csrf, "to general")))
    assert json.loads(await alice.recv())["payload"]["text"] == "to general"
    assert json.loads(await bob.recv())["payload"]["text"] == "to general"  # bob is in general too
    await alice.close()
    await bob.close()
