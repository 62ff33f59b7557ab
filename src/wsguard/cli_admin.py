"""``wsguard sessions list|kill`` and ``wsguard ban list|add|remove``.

They talk to a running server's admin API (``--url``, the HTTP API port) with
the admin credential from ``WSGUARD_ADMIN_TOKEN`` (or ``--token-file``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

DEFAULT_URL = "http://127.0.0.1:8765"  # the WebSocket port answers the admin API too
TIMEOUT_S = 10.0


def _admin_token(token_file: str | None) -> str:
    if token_file:
        return Path(token_file).read_text(encoding="utf-8").strip()
    token = os.environ.get("WSGUARD_ADMIN_TOKEN", "")
    if not token:
        click.echo("wsguard: admin token not found: set WSGUARD_ADMIN_TOKEN", err=True)
        sys.exit(2)
    return token


def _call(url: str, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()  # it holds the response's socket
        if exc.code == 401:
            click.echo("wsguard: the server refused the admin token", err=True)
            sys.exit(1)
        if exc.code == 404 and path.startswith("/admin/") and method == "GET":
            click.echo("wsguard: admin API off (no admin_token configured on the server)", err=True)
            sys.exit(1)
        try:
            return exc.code, json.loads(body or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"wsguard: cannot reach {url}: {getattr(exc, 'reason', exc)}", err=True)
        sys.exit(1)


_url_option = click.option("--url", default=DEFAULT_URL, show_default=True, help="HTTP API URL.")
_token_option = click.option(
    "--token-file", type=click.Path(dir_okay=False, exists=True), help="File with the admin token."
)


@click.group()
def sessions() -> None:
    """List or terminate live sessions of a running server."""


@sessions.command("list")
@_url_option
@_token_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def sessions_list(url: str, token_file: str | None, as_json: bool) -> None:
    """List live sessions."""
    _, body = _call(url, _admin_token(token_file), "GET", "/admin/sessions")
    rows = body["sessions"] if isinstance(body, dict) else []
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'SESSION':<24} {'USER':<20} {'IP':<40} ROLES")
    for row in rows:
        click.echo(f"{row['id']:<24} {row['user']:<20} {row['ip']:<40} {','.join(row['roles'])}")


@sessions.command("kill")
@click.argument("session_id", required=False)
@click.option("--user", help="Terminate every session of this user instead.")
@_url_option
@_token_option
def sessions_kill(
    session_id: str | None, user: str | None, url: str, token_file: str | None
) -> None:
    """Terminate a session (close 4410); its token is refused until it expires."""
    if bool(session_id) == bool(user):
        raise click.UsageError("give a SESSION_ID or --user, not both")
    token = _admin_token(token_file)
    if user:
        status, body = _call(url, token, "DELETE", f"/admin/users/{quote(user, safe='')}/sessions")
    else:
        status, body = _call(
            url, token, "DELETE", f"/admin/sessions/{quote(str(session_id), safe='')}"
        )
    count = body.get("terminated", 0) if isinstance(body, dict) else 0
    click.echo(f"terminated {count} session(s)")
    if status >= 400:
        sys.exit(1)


@click.group()
def ban() -> None:
    """List, add or remove bans on a running server."""


@ban.command("list")
@_url_option
@_token_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ban_list(url: str, token_file: str | None, as_json: bool) -> None:
    """List bans in force."""
    _, body = _call(url, _admin_token(token_file), "GET", "/admin/bans")
    rows = body["bans"] if isinstance(body, dict) else []
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'KIND':<5} {'KEY':<40} {'UNTIL':<12} REASON")
    for row in rows:
        click.echo(f"{row['kind']:<5} {row['key']:<40} {int(row['until']):<12} {row['reason']}")


@ban.command("add")
@click.argument("kind", type=click.Choice(["ip", "user"]))
@click.argument("key")
@click.option("--seconds", type=float, help="Duration; escalating by default.")
@click.option("--reason", default="admin", show_default=True)
@_url_option
@_token_option
def ban_add(
    kind: str, key: str, seconds: float | None, reason: str, url: str, token_file: str | None
) -> None:
    """Ban an IP or a user."""
    body: dict[str, Any] = {"kind": kind, "key": key, "reason": reason}
    if seconds is not None:
        body["seconds"] = seconds
    status, answer = _call(url, _admin_token(token_file), "POST", "/admin/bans", body)
    if status >= 400:
        click.echo(f"wsguard: refused ({status})", err=True)
        sys.exit(1)
    click.echo(f"banned {answer['kind']} {answer['key']} until {int(answer['until'])}")


@ban.command("remove")
@click.argument("kind", type=click.Choice(["ip", "user"]))
@click.argument("key")
@_url_option
@_token_option
def ban_remove(kind: str, key: str, url: str, token_file: str | None) -> None:
    """Lift a ban."""
    status, _ = _call(
        url, _admin_token(token_file), "DELETE", "/admin/bans", {"kind": kind, "key": key}
    )
    if status >= 400:
        click.echo("no such ban")
        sys.exit(1)
    click.echo(f"removed {kind} {key}")
