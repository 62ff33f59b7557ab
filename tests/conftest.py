"""Shared fixtures: a guard with a known secret, tokens, and a live server on 127.0.0.1."""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from wsguard.adapters.freeze import freeze_startup_objects
from wsguard.adapters.websockets import serve
from wsguard.config import GuardConfig, JwtConfig
from wsguard.core.auth import issue_token
from wsguard.core.clock import SystemClock
from wsguard.core.guard import Guard
from wsguard.demo import install_demo

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
AUDIENCE = "wsguard-tests"
ISSUER = "https://auth.test"
ALLOWED_ORIGIN = "https://app.example"


def make_config(**jwt: Any) -> GuardConfig:
    from wsguard.config import OriginConfig

    settings: dict[str, Any] = {"secret": SECRET, "audience": AUDIENCE, "issuer": ISSUER}
    settings.update(jwt)
    return GuardConfig(jwt=JwtConfig(**settings), origins=OriginConfig(allowed=(ALLOWED_ORIGIN,)))


def make_token(
    sub: str = "alice", roles: Iterable[str] = ("user",), ttl: float = 600, **extra: Any
) -> str:
    config = JwtConfig(secret=SECRET, audience=AUDIENCE, issuer=ISSUER)
    return issue_token(config, sub, roles, ttl, SystemClock().now(), extra_claims=extra or None)


class LiveServer:
    """A guarded demo server on a free loopback port."""

    def __init__(self, guard: Guard, url: str) -> None:
        self.guard = guard
        self.url = url

    def connect(self, token: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("additional_headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("open_timeout", 5)
        kwargs.setdefault("close_timeout", 2)
        return connect(self.url, additional_headers=headers, **kwargs)


async def welcome(ws: ClientConnection) -> dict[str, Any]:
    frame = json.loads(await ws.recv(decode=True))
    assert frame["type"] == "welcome"
    payload: dict[str, Any] = frame["payload"]
    return payload


async def exchange(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    reply: dict[str, Any] = json.loads(await ws.recv(decode=True))
    return reply


@pytest.fixture
def guard_factory() -> Callable[..., Guard]:
    def factory(config: GuardConfig | None = None, demo: bool = True) -> Guard:
        guard = Guard(config or make_config())
        if demo:
            install_demo(guard)
        return guard

    return factory


@pytest.fixture
async def live_server(guard_factory: Callable[..., Guard]) -> AsyncIterator[LiveServer]:
    guard = guard_factory()
    async with serve(guard, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield LiveServer(guard, f"ws://127.0.0.1:{port}/ws")


async def assert_served(server: LiveServer) -> None:
    """A legitimate client still gets its chat message broadcast back."""
    async with server.connect(make_token("legit")) as ws:
        info = await welcome(ws)
        reply = await exchange(
            ws,
            {
                "type": "chat",
                "id": "ok-1",
                "payload": {"text": "still here"},
                "csrfToken": info["csrfToken"],
            },
        )
        assert reply == {
            "type": "chat",
            "id": "ok-1",
            "payload": {"room": "general", "text": "still here", "from": "legit"},
        }


@pytest.fixture(autouse=True, scope="session")
def _freeze_startup_state() -> None:
    """Freeze now, as a server process does when its first server starts.

    Otherwise whichever test served first would have its own objects frozen
    (see ``wsguard.adapters.freeze``), and the suite would depend on the order.
    """
    freeze_startup_objects()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect after each test, so that a leaked socket or file fails the test that leaked it."""
    yield
    gc.collect()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve_process(
    cwd: Path, *args: str, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`wsguard serve ARGS` in a process, once it printed "Ctrl-C"; with its output.

    Killed on the way out if it is still running.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "wsguard.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,  # the development audit log and its key go here
    )
    assert process.stdout is not None
    try:
        output = ""
        deadline = time.monotonic() + 20
        while "Ctrl-C" not in output and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output += line
        assert "Ctrl-C" in output, output
        yield process, output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
