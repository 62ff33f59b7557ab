"""Redaction and IP privacy: no secret reaches the file; IPs per ip_mode."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from tests.audit import KEY, ev, sql, write_log
from wsguard.audit import ip_privacy, redact
from wsguard.audit.events import IP_CACHE_SIZE, IpPrivacy, hash_ip, truncate_ip

SECRETS = {
    "token": "eyJhbGciOiJIUzI1NiJ9.SECRET-TOKEN",
    "csrf_token": "CSRF-VALUE-123",
    "client_secret": "SHHH-SECRET",
    "Password": "hunter2-PASSWORD",
    "payload": "MESSAGE-PAYLOAD-TEXT",
    "Authorization": "Bearer AUTH-HEADER",
    "cookie": "session=COOKIE-VALUE",
    "api_key": "API-KEY-VALUE",
    "refresh_TOKEN": "REFRESH-VALUE",
}


def _all_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


@pytest.mark.parametrize("name", ["a.db", "a.jsonl"])
def test_secrets_never_reach_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_log(path, [ev(details={"reason": "bad_signature", **SECRETS})])
    data = _all_bytes(path)
    assert b"bad_signature" in data
    for value in SECRETS.values():
        assert value.encode() not in data, value


def test_redact_keeps_harmless_details() -> None:
    event = ev(details={"reason": "x", "kind": "ip", "count": 3, "csrf": "y"})
    assert dict(redact(event).details) == {"reason": "x", "kind": "ip", "count": 3}
    clean = ev(details={"reason": "x"})
    assert redact(clean) is clean


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:abcd:1234::1", "2001:db8:abcd::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("2001:db8:abcd:1234::/64", "2001:db8:abcd::"),
    ],
)
def test_truncate(ip: str, expected: str) -> None:
    assert ip_privacy("truncate", KEY)(ev(client_ip=ip)).client_ip == expected


def test_truncate_hashes_what_is_not_an_ip() -> None:
    out = ip_privacy("truncate", KEY)(ev(client_ip="not-an-ip")).client_ip
    assert out is not None and len(out) == 16 and "not" not in out


def test_hash_and_full() -> None:
    ip = "203.0.113.77"
    expected = hmac.new(KEY, ip.encode(), hashlib.sha256).hexdigest()[:16]
    assert ip_privacy("hash", KEY)(ev(client_ip=ip)).client_ip == expected
    assert ip_privacy("full", KEY)(ev(client_ip=ip)).client_ip == ip
    assert ip_privacy("hash", KEY)(ev()).client_ip is None


def test_ip_mode_applies_in_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    write_log(path, [ev(client_ip="203.0.113.77")], ip_mode="truncate")
    rows = sql(path, "SELECT client_ip, record FROM entries WHERE seq = 1")
    assert rows[0][0] == json.loads(rows[0][1])["client_ip"] == "203.0.113.0"
    assert b"203.0.113.77" not in _all_bytes(path)


@pytest.mark.parametrize("mode", ["truncate", "hash"])
def test_remembered_rewrites_equal_fresh_ones_and_stay_bounded(mode: str) -> None:
    # The processor remembers the last IP_CACHE_SIZE rewrites: every answer must be
    # the one computed from scratch, for new and repeated addresses alike.
    process = IpPrivacy(mode, KEY)  # type: ignore[arg-type]
    fresh = truncate_ip if mode == "truncate" else hash_ip
    ips = [f"2001:db8:{i:x}::{i % 7:x}" for i in range(6000)] + ["203.0.113.77", "x"]
    for ip in ips + ips[-100:] + ips[:100]:
        assert process(ev(client_ip=ip)).client_ip == fresh(ip, KEY)
    assert process.rewrite.cache_info().currsize == IP_CACHE_SIZE
    # One cache per processor, so per key: another key never sees this one's answers.
    other_key = b"another key that differs" * 2
    other = IpPrivacy(mode, other_key)  # type: ignore[arg-type]
    assert other(ev(client_ip="x")).client_ip == fresh("x", other_key)
    assert fresh("x", other_key) != fresh("x", KEY)


def test_the_rewritten_event_keeps_every_other_field() -> None:
    event = ev(client_ip="203.0.113.77", details={"reason": "x"})
    out = IpPrivacy("truncate", KEY)(event)
    assert out == event._replace(client_ip="203.0.113.0")
