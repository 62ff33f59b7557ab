"""The ``wsguard`` command: ``serve``, ``token`` and ``config init|check``."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from wsguard.audit.keys import resolve_audit_key
from wsguard.cli_admin import ban, sessions
from wsguard.cli_log import log
from wsguard.config import GuardConfig, env_name, load_config, read_toml
from wsguard.config_template import CONFIG_TEMPLATE
from wsguard.core.auth import issue_token
from wsguard.exceptions import ConfigurationError
from wsguard.production import production_problems
from wsguard.runtime import Runtime, build_runtime
from wsguard.tls import server_ssl_context

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL_S = 30 * 86400


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h`` or ``7d`` as seconds.

    Raises:
        click.BadParameter: for anything else, or zero.
    """
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 12h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _effective_mode(path: str | None, overrides: dict[str, Any]) -> str:
    if "mode" in overrides:
        return str(overrides["mode"])
    env_mode = os.environ.get(env_name(None, "mode"))
    if env_mode:
        return env_mode
    data = read_toml(path) if path else {}
    return str(data.get("mode", "development"))


def resolve_config(
    path: str | None, overrides: dict[str, Any] | None = None
) -> tuple[GuardConfig, bool]:
    """Load the config; in development mode with no HMAC secret, make one for this run.

    Returns:
        ``(config, generated)`` where ``generated`` says a random secret was made.
    """
    overrides = dict(overrides or {})
    try:
        return load_config(path, overrides=overrides), False
    except ConfigurationError as exc:
        if exc.setting != "jwt.secret" or _effective_mode(path, overrides) != "development":
            raise
    jwt = dict(overrides.get("jwt", {}))
    jwt["secret"] = secrets.token_urlsafe(32)
    overrides["jwt"] = jwt
    return load_config(path, overrides=overrides), True


def _fail(exc: ConfigurationError) -> None:
    click.echo(f"wsguard: configuration error: {exc}", err=True)
    sys.exit(2)


@click.group()
@click.version_option(package_name="wsguard")
def main() -> None:
    """wsguard: a security layer for WebSocket services."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--host", help="Interface to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, help="TCP port (default from config: 8765).")
@click.option("--http-port", type=int, help="HTTP API port: tickets, admin, health, metrics.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate: serve wss://.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key for --tls-cert.")
@click.option(
    "--loop",
    "loop_name",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    help="Event loop: auto uses uvloop when installed (pip install 'wsguard[speed]').",
)
def serve(
    config_path: str | None,
    host: str | None,
    port: int | None,
    http_port: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    loop_name: str,
) -> None:
    """Run the guarded demo chat server until Ctrl-C or SIGTERM."""
    overrides: dict[str, dict[str, Any]] = {}
    for section, key, value in (
        ("server", "host", host),
        ("server", "port", port),
        ("server", "http_port", http_port),
        ("tls", "cert_file", tls_cert),
        ("tls", "key_file", tls_key),
    ):
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        loop_factory = event_loop_factory(loop_name)
        config, generated = resolve_config(config_path, overrides or None)
        runtime = build_runtime(config)
    except ConfigurationError as exc:
        _fail(exc)
        return
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(runtime, generated))
    finally:
        runtime.close()


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop ``wsguard serve`` runs on: uvloop when asked or (``auto``) installed.

    Raises:
        ConfigurationError: ``uvloop`` was asked for and is not installed.
    """
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigurationError(
                "--loop", "uvloop is not installed: pip install 'wsguard[speed]'"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve(runtime: Runtime, generated_secret: bool) -> None:
    from wsguard.adapters.websockets import serve as guarded_serve
    from wsguard.demo import install_demo

    config = runtime.guard.config
    install_demo(runtime.guard)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for note in runtime.notes:
        click.echo(note)
    click.echo(f"Event loop: {type(loop).__module__.partition('.')[0]}")
    async with guarded_serve(
        runtime.guard, reputation=runtime.reputation, **runtime.serve_options
    ) as service:
        scheme = "wss" if config.tls.enabled else "ws"
        bound = service.sockets[0].getsockname()
        url = f"{scheme}://{bound[0]}:{bound[1]}{config.server.path}"
        click.echo(f"wsguard {config.mode} server on {url}")
        if service.http_port is not None:
            http_scheme = "https" if config.tls.enabled else "http"
            click.echo(f"HTTP API on {http_scheme}://{bound[0]}:{service.http_port}")
        if generated_secret:
            token = issue_token(config.jwt, "demo", ["user"], 3600, runtime.guard.clock.now())
            click.echo("No jwt.secret configured: made a random one for this run.")
            click.echo(f"Demo token (sub=demo, roles=user, 1 h):\n  {token}")
            click.echo("Connect from another terminal (prints the welcome frame):")
            click.echo(
                '.venv/bin/python -c "\n'
                "from websockets.sync.client import connect\n"
                f"with connect('{url}', additional_headers="
                f"{{'Authorization': 'Bearer {token}'}}) as c:\n"
                '    print(c.recv())"'
            )
        click.echo("Ctrl-C stops it.")
        await stop.wait()
        click.echo("Shutting down: closing connections with 1001.")


@main.command()
@click.option("--sub", required=True, help="The subject (user id).")
@click.option("--roles", default="user", show_default=True, help="Comma-separated roles.")
@click.option("--ttl", default="15m", show_default=True, help="Lifetime: 90s, 15m, 12h, 7d.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option(
    "--private-key",
    type=click.Path(dir_okay=False, exists=True),
    help="PEM private key, for RS/ES/EdDSA configs.",
)
def token(sub: str, roles: str, ttl: str, config_path: str | None, private_key: str | None) -> None:
    """Print a token signed with the configured key (WSGUARD_JWT_SECRET or the config)."""
    seconds = parse_duration(ttl)
    if seconds > MAX_TTL_S:
        raise click.BadParameter("at most 30d", param_hint="--ttl")
    try:
        config = load_config(config_path)
        pem = Path(private_key).read_text(encoding="utf-8") if private_key else None
        role_list = [r.strip() for r in roles.split(",") if r.strip()]
        from wsguard.core.clock import SystemClock

        click.echo(
            issue_token(config.jwt, sub, role_list, seconds, SystemClock().now(), private_key=pem)
        )
    except ConfigurationError as exc:
        _fail(exc)


@main.group()
def config() -> None:
    """Write or check a config file."""


@config.command("init")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def config_init(path: str | None, force: bool) -> None:
    """Write a commented config with the secure defaults (to PATH or stdout)."""
    if path is None:
        click.echo(CONFIG_TEMPLATE, nl=False)
        return
    target = Path(path)
    if target.exists() and not force:
        click.echo(f"wsguard: {path} exists; use --force to overwrite", err=True)
        sys.exit(1)
    target.write_text(CONFIG_TEMPLATE, encoding="utf-8")
    target.chmod(0o600)  # it will hold a secret
    click.echo(f"wrote {path}")


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path: str) -> None:
    """Validate a config file (with WSGUARD_* variables applied), as `serve` would.

    Also loads the TLS files and lists every production problem, one a line.
    """
    try:
        cfg, generated = resolve_config(path)
        if cfg.tls.enabled:
            assert cfg.tls.cert_file and cfg.tls.key_file  # help mypy
            server_ssl_context(cfg.tls.cert_file, cfg.tls.key_file)
    except ConfigurationError as exc:
        _fail(exc)
        return
    problems = production_problems(
        cfg, tls_enabled=cfg.tls.enabled, audit_enabled=cfg.audit.enabled
    )
    if problems:
        for problem in problems:
            click.echo(f"wsguard: configuration error: {problem}", err=True)
        sys.exit(2)
    if cfg.audit.enabled and cfg.mode == "production":
        try:  # serve would refuse too: production never makes an audit key itself
            resolve_audit_key(cfg.audit_key, cfg.audit.path, create=False)
        except ConfigurationError as exc:
            _fail(exc)
    note = " (no jwt.secret: development mode makes one per run)" if generated else ""
    click.echo(f"{path}: ok, mode={cfg.mode}{note}")


main.add_command(sessions)
main.add_command(ban)
main.add_command(log)


if __name__ == "__main__":  # pragma: no cover
    main()
