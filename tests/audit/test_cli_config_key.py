"""`wsguard log verify --config` reads the audit key from the server's config."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from wsguard.audit import AuditConfig, AuditEvent, AuditWriter
from wsguard.cli import main
from wsguard.core.clock import FakeClock

KEY = "k" * 40


def test_verify_takes_the_key_from_the_config(tmp_path: Path) -> None:
    log = tmp_path / "audit.db"
    clock = FakeClock()
    writer = AuditWriter(AuditConfig(path=str(log)), KEY.encode(), clock)
    writer.emit(AuditEvent("auth_failed", "warning", clock.now(), client_ip="192.0.2.1"))
    writer.close()
    config = tmp_path / "wsguard.toml"
    config.write_text(f'audit_key = "{KEY}"\n')
    runner = CliRunner()
    ok = runner.invoke(
        main, ["log", "verify", str(log), "--config", str(config)], env={"WSGUARD_AUDIT_KEY": ""}
    )
    assert ok.exit_code == 0, ok.output
    assert "ok: " in ok.output
    config.write_text('audit_key = "' + "w" * 40 + '"\n')
    bad = runner.invoke(
        main, ["log", "verify", str(log), "--config", str(config)], env={"WSGUARD_AUDIT_KEY": ""}
    )
    assert bad.exit_code == 1


def test_report_counts_a_failed_handshake_login_once(tmp_path: Path) -> None:
    """A refused handshake logs auth_failed and handshake_refused; the report counts one refusal."""
    from wsguard.audit.query import report

    log = tmp_path / "audit.db"
    clock = FakeClock()
    writer = AuditWriter(AuditConfig(path=str(log)), KEY.encode(), clock)
    ip = "192.0.2.7"
    writer.emit(
        AuditEvent(
            "auth_failed", "warning", clock.now(), client_ip=ip, details={"stage": "handshake"}
        )
    )
    writer.emit(
        AuditEvent(
            "handshake_refused",
            "warning",
            clock.now(),
            client_ip=ip,
            details={"status": 401, "reason": "expired"},
        )
    )
    writer.emit(
        AuditEvent(
            "auth_failed", "warning", clock.now(), client_ip=ip, details={"reason": "ticket"}
        )
    )
    writer.close()
    summary = report(str(log), 3600, now=clock.now())
    # The handshake refusal once, plus the ticket's failed authentication.
    assert summary.refusals_by_ip == [(ip, 2)]
    assert dict(summary.refusals_by_reason) == {"expired": 1, "ticket": 1}
