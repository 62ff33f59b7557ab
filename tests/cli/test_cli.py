"""The ``wsguard`` command, run as a user would: in-process with CliRunner, and
``wsguard serve`` as a real subprocess on a free loopback port."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from websockets.sync.client import connect

from tests.conftest import free_port, serve_process
from wsguard.cli import main, parse_duration
from wsguard.config import JwtConfig, load_config
from wsguard.core.auth import TokenVerifier
from wsguard.core.clock import SystemClock

SECRET = "cli-secret-0123456789abcdef0123456789abcdef"


def test_token_round_trip() -> None:
    """`wsguard token` signs with WSGUARD_JWT_SECRET; the token verifies with it."""
    result = CliRunner().invoke(
        main,
        ["token", "--sub", "alice", "--roles", "user,admin", "--ttl", "15m"],
        env={"WSGUARD_JWT_SECRET": SECRET},
    )
    assert result.exit_code == 0, result.output
    claims = TokenVerifier(JwtConfig(secret=SECRET), SystemClock()).verify(result.output.strip())
    assert claims.subject == "alice"
    assert claims.roles == {"user", "admin"}
    assert 890 < claims.expires_at - time.time() <= 900


def test_token_without_secret_is_an_error() -> None:
    """No secret configured: one line naming the setting, non-zero exit."""
    result = CliRunner().invoke(main, ["token", "--sub", "alice"], env={"WSGUARD_JWT_SECRET": ""})
    assert result.exit_code == 2
    assert "jwt.secret" in result.output


@pytest.mark.parametrize(
    "text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "15x", "-5m", "1.5h"])
def test_parse_duration_refuses(text: str) -> None:
    import click

    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_config_init_then_check(tmp_path: Path) -> None:
    """`config init` writes a config that `config check` accepts, with owner-only mode."""
    path = tmp_path / "wsguard.toml"
    runner = CliRunner()
    result = runner.invoke(main, ["config", "init", str(path)])
    assert result.exit_code == 0, result.output
    assert path.stat().st_mode & 0o077 == 0
    assert runner.invoke(main, ["config", "init", str(path)]).exit_code == 1  # no overwrite
    result = runner.invoke(main, ["config", "check", str(path)], env={"WSGUARD_JWT_SECRET": ""})
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    # The template's values are the dataclasses' defaults.
    config = load_config(path, env={"WSGUARD_JWT_SECRET": SECRET})
    assert config == load_config(None, env={"WSGUARD_JWT_SECRET": SECRET})


@pytest.mark.parametrize(
    "toml, env, setting",
    [
        ("[server]\nport = 70000\n", {}, "server.port"),
        ("[server]\nhots = 'x'\n", {}, "server.hots"),
        ('[jwt]\nalgorithms = ["none"]\n', {}, "jwt.algorithms"),
        ('[jwt]\nalgorithms = ["HS256", "RS256"]\nsecret = "x"\n', {}, "jwt.algorithms"),
        ("[jwt]\nleeway = 120\n", {}, "jwt.leeway"),
        ('[origins]\nallowed = ["*"]\n', {}, "origins.allowed"),
        ("", {"WSGUARD_SERVER_PORT": "eighty"}, "server.port"),
        ("", {"WSGUARD_MODE": "prod"}, "mode"),
        ('mode = "production"\n', {}, "jwt.secret"),
        ("not toml [", {}, "invalid TOML"),
    ],
)
def test_config_check_names_the_bad_setting(
    tmp_path: Path, toml: str, env: dict[str, str], setting: str
) -> None:
    """A bad config stops with one line naming the setting and why."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = CliRunner().invoke(
        main, ["config", "check", str(path)], env={"WSGUARD_JWT_SECRET": "", **env}
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0], result.output


def test_environment_overrides_file(tmp_path: Path) -> None:
    """WSGUARD_* variables win over the file; lists are comma-separated."""
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9000\n[origins]\nallowed = ["https://a.example"]\n')
    config = load_config(
        path,
        env={
            "WSGUARD_JWT_SECRET": SECRET,
            "WSGUARD_SERVER_PORT": "9100",
            "WSGUARD_ORIGINS_ALLOWED": "https://b.example, https://c.example",
        },
    )
    assert config.server.port == 9100
    assert config.origins.allowed == ("https://b.example", "https://c.example")


def test_serve_runs_the_demo_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """`wsguard serve` (development) prints a working token, serves chat, exits 0 on Ctrl-C."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGUARD_")}
    with serve_process(tmp_path, "--port", str(port), env=env) as (process, output):
        match = re.search(r"Bearer ([\w.-]+)", output)
        assert match, output
        with connect(
            f"ws://127.0.0.1:{port}/ws",
            additional_headers={"Authorization": f"Bearer {match.group(1)}"},
            open_timeout=5,
        ) as ws:
            welcome = json.loads(ws.recv(timeout=5))
            csrf = welcome["payload"]["csrfToken"]
            ws.send(
                json.dumps(
                    {
                        "type": "chat",
                        "id": "1",
                        "payload": {"text": "<b>hi</b><script>x</script>"},
                        "csrfToken": csrf,
                    }
                )
            )
            reply = json.loads(ws.recv(timeout=5))
            assert reply["payload"] == {"room": "general", "text": "<b>hi</b>", "from": "demo"}
            process.send_signal(signal.SIGINT)
            with pytest.raises(Exception) as closed:
                ws.recv(timeout=10)
            assert "1001" in str(closed.value)
        assert process.wait(timeout=15) == 0


def test_unknown_wsguard_variable_is_an_error() -> None:
    """A typo in a WSGUARD_* variable stops the start instead of being ignored."""
    result = CliRunner().invoke(
        main,
        ["token", "--sub", "a"],
        env={"WSGUARD_JWT_SECRT": SECRET, "WSGUARD_JWT_SECRET": SECRET},
    )
    assert result.exit_code == 2
    assert "WSGUARD_JWT_SECRT" in result.output


def test_config_check_lists_every_production_problem(tmp_path: Path) -> None:
    """In production, `config check` names each problem on its own line and exits 2."""
    path = tmp_path / "prod.toml"
    path.write_text('mode = "production"\n[jwt]\nsecret = "' + "s" * 40 + '"\n')
    result = CliRunner().invoke(
        main, ["config", "check", str(path)], env={"WSGUARD_JWT_SECRET": ""}
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "tls.cert_file",
        "origins.allowed",
        "jwt.audience",
    ]
