"""`wsguard serve` as a real process: shutdown, crash safety of the audit log,
production start checks, and the admin commands talking to it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import free_port, serve_process
from wsguard.audit.keys import read_key_file
from wsguard.audit.verify import verify_file
from wsguard.cli import main
from wsguard.config import JwtConfig
from wsguard.core.auth import issue_token

SECRET = "process-secret-0123456789abcdef0123456789"
ADMIN = "process-admin-token-0123456789abcdef01"


class Server:
    def __init__(
        self, process: subprocess.Popen[str], port: int, http_port: int, folder: Path
    ) -> None:
        self.process = process
        self.port = port
        self.http_port = http_port
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.audit_log = folder / "audit.db"

    def audit_key(self) -> bytes:
        return read_key_file(str(self.audit_log) + ".key")

    def token(self, sub: str = "alice") -> str:
        return issue_token(JwtConfig(secret=SECRET), sub, ["user"], 600, time.time())


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGUARD_")}
    env.update(
        WSGUARD_JWT_SECRET=SECRET,
        WSGUARD_ADMIN_TOKEN=ADMIN,
        WSGUARD_AUDIT_PATH=str(tmp_path / "audit.db"),
        WSGUARD_RATE_LIMITS_HANDSHAKE_ATTEMPTS="100000",
        WSGUARD_RATE_LIMITS_MAX_CONNECTIONS_PER_IP="1000",
        **extra,
    )
    return env


def serving(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> AbstractContextManager[tuple[subprocess.Popen[str], str]]:
    """`wsguard serve ARGS` with this module's environment (see ``serve_process``)."""
    return serve_process(tmp_path, *args, env=_env(tmp_path) if env is None else env)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port, http_port = free_port(), free_port()
    with serving(tmp_path, "--port", str(port), "--http-port", str(http_port)) as (process, _):
        yield Server(process, port, http_port, tmp_path)


async def _open_many(server: Server, count: int, secrets_seen: list[str]) -> list[object]:
    clients = []
    for i in range(count):
        token = server.token(f"user{i % 10}")
        ws = await connect(
            server.url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=5
        )
        welcome = json.loads(await ws.recv())
        secrets_seen += [token, welcome["payload"]["csrfToken"]]
        if i == 0:  # one message with a payload that must not reach the log either
            await ws.send(
                json.dumps(
                    {"type": "chat", "payload": {"text": "PAYLOAD-SENTINEL"}, "csrfToken": "bad"}
                )
            )
            await ws.recv()
        clients.append(ws)
    return clients


async def test_sigterm_with_50_connections_closes_1001_and_exits_0(server: Server) -> None:
    """SIGTERM: every connection gets 1001, the audit log is sealed, exit 0 within the deadline."""
    seen: list[str] = []
    clients = await _open_many(server, 50, seen)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    codes = []
    for ws in clients:
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(15):
                await ws.recv()  # type: ignore[attr-defined]
        assert info.value.rcvd is not None
        codes.append(info.value.rcvd.code)
    assert codes == [1001] * 50
    assert await asyncio.to_thread(server.process.wait, 15) == 0
    assert time.monotonic() - started < 10
    result = verify_file(server.audit_log, server.audit_key())
    assert result.ok and result.sealed, result
    # No token, CSRF token, secret or payload in the log's files.
    stored = b"".join(p.read_bytes() for p in server.audit_log.parent.glob("audit.db*"))
    assert b"csrf_failed" in stored  # the refusal itself is recorded
    for secret in [*seen, SECRET, ADMIN, "PAYLOAD-SENTINEL"]:
        assert secret.encode() not in stored


async def test_sigkill_during_a_refusal_flood_leaves_a_verifiable_log(server: Server) -> None:
    """Kill -9 while refusals pour in: the log opens and verifies up to its last entry."""

    async def refused() -> None:
        try:
            async with connect(server.url, open_timeout=5):
                pass
        except (InvalidStatus, OSError, TimeoutError):
            pass

    async with asyncio.timeout(30):
        for _ in range(20):
            await asyncio.gather(*(refused() for _ in range(20)))
    server.process.kill()
    server.process.wait()
    result = verify_file(server.audit_log, server.audit_key(), allow_unsealed=True)
    assert result.ok, result
    assert result.count >= 100  # config_loaded plus refusals and their auth failures


def test_admin_commands_against_a_running_server(server: Server) -> None:
    """`wsguard sessions list|kill` and `wsguard ban add|list|remove` over the admin API."""

    async def scenario() -> None:
        async with connect(
            server.url, additional_headers={"Authorization": f"Bearer {server.token('zoe')}"}
        ) as ws:
            welcome = json.loads(await ws.recv())
            runner = CliRunner()
            url = f"http://127.0.0.1:{server.http_port}"
            env = {"WSGUARD_ADMIN_TOKEN": ADMIN}
            listed = await asyncio.to_thread(
                runner.invoke, main, ["sessions", "list", "--url", url, "--json"], env=env
            )
            assert listed.exit_code == 0, listed.output
            sessions = json.loads(listed.output)
            assert [s["user"] for s in sessions] == ["zoe"]
            assert sessions[0]["id"] == welcome["payload"]["sessionId"]
            wrong = await asyncio.to_thread(
                runner.invoke,
                main,
                ["sessions", "list", "--url", url],
                env={"WSGUARD_ADMIN_TOKEN": "x" * 40},
            )
            assert wrong.exit_code == 1
            killed = await asyncio.to_thread(
                runner.invoke, main, ["sessions", "kill", sessions[0]["id"], "--url", url], env=env
            )
            assert killed.exit_code == 0 and "terminated 1" in killed.output
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4410
            for args in (
                ["ban", "add", "ip", "192.0.2.9", "--seconds", "60", "--url", url],
                ["ban", "list", "--url", url],
                ["ban", "remove", "ip", "192.0.2.9", "--url", url],
            ):
                result = await asyncio.to_thread(runner.invoke, main, args, env=env)
                assert result.exit_code == 0, (args, result.output)
                assert "192.0.2.9" in result.output

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "env, setting",
    [
        ({}, "tls.cert_file"),
        (
            {
                "WSGUARD_TRUSTED_PROXIES": "10.0.0.0/8",
                "WSGUARD_ORIGINS_ALLOWED": "https://a.example",
                "WSGUARD_JWT_AUDIENCE": "svc",
                "WSGUARD_CREDENTIALS_QUERY_TOKEN": "true",
            },
            "credentials.query_token",
        ),
        ({"WSGUARD_TRUSTED_PROXIES": "10.0.0.0/8", "WSGUARD_JWT_SECRET": "short"}, "jwt.secret"),
        ({"WSGUARD_TRUSTED_PROXIES": "10.0.0.0/8"}, "origins.allowed"),
        (
            {
                "WSGUARD_TRUSTED_PROXIES": "10.0.0.0/8",
                "WSGUARD_ORIGINS_ALLOWED": "https://a.example",
            },
            "jwt.audience",
        ),
        (
            {
                "WSGUARD_TRUSTED_PROXIES": "10.0.0.0/8",
                "WSGUARD_ORIGINS_ALLOWED": "https://a.example",
                "WSGUARD_JWT_AUDIENCE": "svc",
                "WSGUARD_AUDIT_ENABLED": "false",
            },
            "audit",
        ),
    ],
)
def test_production_refuses_to_start(tmp_path: Path, env: dict[str, str], setting: str) -> None:
    """WSGUARD_MODE=production with a protection off: exit 2 and one line naming it."""
    full = _env(tmp_path, WSGUARD_MODE="production")
    full.update(env)
    result = subprocess.run(
        [sys.executable, "-m", "wsguard.cli", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=full,
        cwd=tmp_path,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0], result.stderr


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_serves_and_shuts_down_on_either_event_loop(tmp_path: Path, loop_name: str) -> None:
    """`--loop` picks the loop (auto: uvloop when installed); both serve a chat and
    close with 1001 on SIGTERM."""
    port = free_port()
    with serving(tmp_path, "--port", str(port), "--loop", loop_name) as (process, output):
        assert f"Event loop: {loop_name}" in output, output
        server = Server(process, port, 0, tmp_path)

        async def chat_then_sigterm() -> int | None:
            headers = {"Authorization": f"Bearer {server.token()}"}
            async with connect(server.url, additional_headers=headers, open_timeout=5) as ws:
                csrf = json.loads(await ws.recv())["payload"]["csrfToken"]
                chat = {"type": "chat", "payload": {"text": "<b>hi</b>"}, "csrfToken": csrf}
                await ws.send(json.dumps(chat))
                assert json.loads(await ws.recv())["payload"]["text"] == "<b>hi</b>"
                process.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(10):
                        await ws.recv()
                return ws.close_code

        assert asyncio.run(chat_then_sigterm()) == 1001
        assert process.wait(15) == 0


def test_loop_uvloop_without_uvloop_installed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    result = CliRunner().invoke(main, ["serve", "--loop", "uvloop"], env=_env(tmp_path))
    assert result.exit_code != 0
    assert "uvloop is not installed" in result.output


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsguard.cli import event_loop_factory

    assert event_loop_factory("asyncio") is None
    assert event_loop_factory("auto") is not None  # uvloop is a dev dependency
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert event_loop_factory("auto") is None


def test_printed_connect_command_works_without_warnings(tmp_path: Path) -> None:
    """With no secret configured, `serve` prints a token and a command; the command
    (run as printed, with Python's warnings as errors) prints the welcome frame."""
    env = _env(tmp_path)
    del env["WSGUARD_JWT_SECRET"]
    with serving(tmp_path, "--port", str(free_port()), env=env) as (process, output):
        start = output.index(".venv/bin/python -c")
        end = output.index('print(c.recv())"', start) + len('print(c.recv())"')
        command = output[start:end].replace(".venv/bin/python", f"{sys.executable} -W error", 1)
        ran = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=20, check=False
        )
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["type"] == "welcome"
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_wss_and_plain_http_on_either_event_loop(tmp_path: Path, loop_name: str) -> None:
    """TLS, a wss chat and a non-GET request on the WebSocket port (read by
    wsguard itself, not websockets) work on both loops."""
    import ssl
    import urllib.error
    import urllib.request

    from wsguard.tls import make_self_signed

    cert, key = make_self_signed(tmp_path)
    port = free_port()
    args = (
        "--port",
        str(port),
        "--loop",
        loop_name,
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    with serving(tmp_path, *args) as (process, output):
        assert f"Event loop: {loop_name}" in output and f"wss://127.0.0.1:{port}" in output
        context = ssl.create_default_context(cafile=str(cert))
        token = Server(process, port, 0, tmp_path).token()

        async def chat() -> str:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"wss://127.0.0.1:{port}/ws"
            async with connect(url, ssl=context, additional_headers=headers) as ws:
                csrf = json.loads(await ws.recv())["payload"]["csrfToken"]
                chat = {"type": "chat", "payload": {"text": "tls"}, "csrfToken": csrf}
                await ws.send(json.dumps(chat))
                text: str = json.loads(await ws.recv())["payload"]["text"]
                return text

        assert asyncio.run(chat()) == "tls"
        # POST without credentials: refused by wsguard's own route, over TLS.
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/auth/ticket", data=b"", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, context=context, timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
