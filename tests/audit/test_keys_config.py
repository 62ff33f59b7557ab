"""The audit key's sources and text rule, and the [audit] section's checks."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from wsguard.audit import AuditConfig, parse_key_text, resolve_audit_key
from wsguard.exceptions import ConfigurationError

HEX = "ab" * 32


def test_key_text_rule() -> None:
    assert parse_key_text(HEX) == bytes.fromhex(HEX)
    assert parse_key_text(f" {HEX}\n") == bytes.fromhex(HEX)
    assert parse_key_text("ab" * 31) == ("ab" * 31).encode()  # not 64: plain text
    assert parse_key_text("pässword") == "pässword".encode()
    with pytest.raises(ConfigurationError):
        parse_key_text("  ")


def test_explicit_key_wins(tmp_path: Path) -> None:
    log = str(tmp_path / "a.db")
    assert resolve_audit_key("plain", log, create=True) == (b"plain", None)
    assert not Path(log + ".key").exists()


def test_development_makes_an_owner_only_key_file(tmp_path: Path) -> None:
    log = str(tmp_path / "a.db")
    key, note = resolve_audit_key(None, log, create=True)
    path = Path(log + ".key")
    assert note == f"made audit key {path}"
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes.fromhex(path.read_text().strip()) == key
    assert resolve_audit_key(None, log, create=False) == (key, None)  # read back


def test_no_key_and_no_create(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_audit_key(None, str(tmp_path / "a.db"), create=False)
    assert (info.value.setting, info.value.problem) == ("audit_key", "not set")


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"sink": "syslog"}, "audit.sink"),
        ({"ip_mode": "mask"}, "audit.ip_mode"),
        ({"path": ""}, "audit.path"),
        ({"queue_size": 0}, "audit.queue_size"),
        ({"checkpoint_every": True}, "audit.checkpoint_every"),
        ({"checkpoint_interval": 0}, "audit.checkpoint_interval"),
        ({"retention_days": -1}, "audit.retention_days"),
        ({"retention_max_entries": 0}, "audit.retention_max_entries"),
    ],
)
def test_config_refuses(settings: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        AuditConfig(**settings)
    assert info.value.setting == setting


def test_config_defaults() -> None:
    config = AuditConfig()
    assert (config.sink, config.path, config.checkpoint_every) == (
        "sqlite",
        "wsguard-audit.db",
        100,
    )
    AuditConfig(sink="stdout", path="")  # stdout needs no path
