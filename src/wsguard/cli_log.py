"""``wsguard log verify|show|report``: check and read the audit log.

The key comes from ``--key-file``, else ``WSGUARD_AUDIT_KEY``, else the key file
beside the log (``<FILE>.key``); key text is read as in
:func:`wsguard.audit.keys.parse_key_text` (64 hex characters are hex, anything
else UTF-8). These commands never create a key. Exit codes: 0 fine, 1 the log
failed verification, 2 usage (no key, no file).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from wsguard.audit.chain import canonical
from wsguard.audit.keys import key_file_for, parse_key_text, read_key_file
from wsguard.audit.query import report as make_report
from wsguard.audit.query import show as query_show
from wsguard.audit.verify import verify_file
from wsguard.config import read_toml
from wsguard.exceptions import ConfigurationError

__all__ = ["log"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_FILE = click.Path(exists=True, dir_okay=False)


def _duration(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) == 0:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 15m, 24h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _key(path: str, key_file: str | None) -> bytes:
    """The key from --key-file, WSGUARD_AUDIT_KEY, --config's audit_key, or <FILE>.key."""
    config_path = click.get_current_context().params.get("config_path")
    try:
        if key_file:
            return read_key_file(key_file)
        env = os.environ.get("WSGUARD_AUDIT_KEY")
        if env:
            return parse_key_text(env)
        if config_path:
            configured = read_toml(config_path).get("audit_key")
            if isinstance(configured, str) and configured:
                return parse_key_text(configured)
        beside = key_file_for(path)
        if beside.is_file():
            return read_key_file(beside)
    except (OSError, ConfigurationError) as exc:
        click.echo(f"wsguard: cannot read the audit key: {exc}", err=True)
        sys.exit(2)
    click.echo("audit key not found: set WSGUARD_AUDIT_KEY", err=True)
    sys.exit(2)


_KEY_FILE_OPTION = click.option(
    "--key-file", type=click.Path(exists=True, dir_okay=False), help="File holding the audit key."
)
_CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="The server's TOML config, for its audit_key.",
)


def _KEY_OPTION(command: Callable[..., None]) -> Callable[..., None]:  # noqa: N802
    """Both key options; the command ignores ``config_path`` (``_key`` reads it)."""

    def without_config(*args: Any, config_path: str | None = None, **kwargs: Any) -> None:
        command(*args, **kwargs)

    functools.update_wrapper(without_config, command)
    return _CONFIG_OPTION(_KEY_FILE_OPTION(without_config))


@click.group()
def log() -> None:
    """Verify and read the tamper-evident audit log."""


@log.command()
@click.argument("file", type=_FILE)
@click.option(
    "--allow-unsealed",
    is_flag=True,
    help="Accept a tail after the last checkpoint (the log of a server that crashed).",
)
@_KEY_OPTION
def verify(file: str, allow_unsealed: bool, key_file: str | None) -> None:
    """Check FILE's hash chain: exit 0 if intact, 1 naming the first bad seq."""
    result = verify_file(file, _key(file, key_file), allow_unsealed=allow_unsealed)
    if result.ok:
        note = "" if result.sealed else " (tail not sealed)"
        click.echo(f"ok: {result.count} entries{note}")
        return
    where = f" at seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
    click.echo(f"FAILED{where}: {result.problem}")
    sys.exit(1)


def _when(timestamp: Any) -> str:
    if not isinstance(timestamp, int | float):
        return "?"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


@log.command()
@click.argument("file", type=_FILE)
@click.option("--event", help="Only this event, e.g. handshake_refused.")
@click.option("--severity", type=click.Choice(["info", "warning", "critical"]))
@click.option("--user", help="Only this user.")
@click.option("--ip", help="Only this client IP (as stored).")
@click.option("--since", help="Only the last DURATION, e.g. 24h.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="The most recent N entries.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@_KEY_OPTION
def show(
    file: str,
    event: str | None,
    severity: str | None,
    user: str | None,
    ip: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
    key_file: str | None,
) -> None:
    """List FILE's entries matching every filter, oldest first."""
    start = time.time() - _duration(since) if since else None
    found = query_show(
        file, event=event, severity=severity, user=user, ip=ip, since=start, limit=limit
    )
    if as_json:
        for record in found:
            click.echo(canonical(record))
        return
    rows = [["TIME", "SEQ", "SEVERITY", "EVENT", "USER", "CLIENT_IP", "DETAILS"]]
    for r in found:
        details = r.get("details")
        if not isinstance(details, dict):
            details = {}
        rows.append(
            [
                _when(r.get("time")),
                str(r.get("seq")),
                str(r.get("severity")),
                str(r.get("event")),
                str(r.get("user") or "-"),
                str(r.get("client_ip") or "-"),
                " ".join(f"{k}={v}" for k, v in sorted(details.items())),
            ]
        )
    click.echo(_table(rows))


@log.command()
@click.argument("file", type=_FILE)
@click.option("--since", default="24h", show_default=True, help="The window, e.g. 24h or 7d.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
@_KEY_OPTION
def report(file: str, since: str, as_json: bool, key_file: str | None) -> None:
    """The top IPs and users by refusals, bans and anomaly disconnects in FILE."""
    result = make_report(file, _duration(since))
    if as_json:
        click.echo(json.dumps(result.as_dict(), sort_keys=True))
        return
    click.echo(f"since {_when(result.since)} ({since}): {result.entries} entries")
    sections = [
        ("refusals by IP", result.refusals_by_ip),
        ("refusals by user", result.refusals_by_user),
        ("refusals by reason", result.refusals_by_reason),
        ("bans by IP", result.bans_by_ip),
        ("bans by user", result.bans_by_user),
        ("anomaly disconnects by IP", result.anomaly_by_ip),
        ("anomaly disconnects by user", result.anomaly_by_user),
    ]
    for title, pairs in sections:
        click.echo(f"{title}:")
        if not pairs:
            click.echo("  (none)")
            continue
        width = max(len(name) for name, _ in pairs)
        for name, count in pairs:
            click.echo(f"  {name.ljust(width)}  {count}")
