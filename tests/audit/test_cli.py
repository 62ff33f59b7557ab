"""``wsguard log verify|show|report`` through click's runner, on real files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.audit import KEY, ev, sql, write_log
from wsguard.audit import report
from wsguard.cli_log import log


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("WSGUARD_AUDIT_KEY", KEY.hex())
    return CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    now = time.time()
    path = tmp_path / "audit.db"
    events = [
        ev(
            "handshake_refused",
            client_ip="198.51.100.1",
            time=now - 60,
            details={"reason": "origin"},
        ),
        ev(
            "handshake_refused", client_ip="198.51.100.1", time=now - 50, details={"reason": "rate"}
        ),
        ev(
            "handshake_refused",
            client_ip="198.51.100.2",
            time=now - 40,
            details={"reason": "origin"},
        ),
        ev("auth_failed", client_ip="198.51.100.1", user="bob", time=now - 30),
        ev("auth_succeeded", "info", client_ip="198.51.100.3", user="alice", time=now - 20),
        ev("ban_added", client_ip="198.51.100.1", time=now - 10, details={"reason": "flood"}),
        ev("anomaly_disconnect", "critical", user="bob", client_ip="198.51.100.9", time=now - 5),
        ev("auth_failed", client_ip="198.51.100.7", time=now - 3 * 86400),  # out of the window
    ]
    write_log(path, events)
    return path


def test_verify_ok_and_failed(runner: CliRunner, db: Path) -> None:
    result = runner.invoke(log, ["verify", str(db)])
    assert (result.exit_code, result.output) == (0, "ok: 9 entries\n")
    sql(db, "DELETE FROM entries WHERE seq = 3")
    result = runner.invoke(log, ["verify", str(db)])
    assert result.exit_code == 1
    assert result.output.startswith("FAILED at seq 3: ")


def test_verify_unsealed_needs_the_flag(runner: CliRunner, db: Path) -> None:
    sql(db, "DELETE FROM entries WHERE seq = 9")
    result = runner.invoke(log, ["verify", str(db)])
    assert result.exit_code == 1 and "tail not sealed" in result.output
    result = runner.invoke(log, ["verify", str(db), "--allow-unsealed"])
    assert (result.exit_code, result.output) == (0, "ok: 8 entries (tail not sealed)\n")


def test_key_sources(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSGUARD_AUDIT_KEY", raising=False)
    runner = CliRunner()
    result = runner.invoke(log, ["verify", str(db)])
    assert result.exit_code == 2
    assert "audit key not found: set WSGUARD_AUDIT_KEY" in result.output
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex() + "\n")
    assert runner.invoke(log, ["verify", str(db), "--key-file", str(key_file)]).exit_code == 0
    Path(f"{db}.key").write_text(KEY.hex())
    assert runner.invoke(log, ["verify", str(db)]).exit_code == 0
    monkeypatch.setenv("WSGUARD_AUDIT_KEY", "wrong")
    assert runner.invoke(log, ["verify", str(db)]).exit_code == 1  # env beats the file


def test_show_json_filters(runner: CliRunner, db: Path) -> None:
    result = runner.invoke(log, ["show", str(db), "--json", "--event", "handshake_refused"])
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3]
    result = runner.invoke(
        log, ["show", str(db), "--json", "--ip", "198.51.100.1", "--since", "1h"]
    )
    assert [json.loads(x)["seq"] for x in result.output.splitlines()] == [1, 2, 4, 6]
    result = runner.invoke(
        log, ["show", str(db), "--json", "--user", "bob", "--severity", "critical"]
    )
    assert [json.loads(x)["event"] for x in result.output.splitlines()] == ["anomaly_disconnect"]


def test_show_table(runner: CliRunner, db: Path) -> None:
    result = runner.invoke(log, ["show", str(db), "--user", "alice"])
    assert result.exit_code == 0
    header, row = result.output.splitlines()
    assert header.split() == ["TIME", "SEQ", "SEVERITY", "EVENT", "USER", "CLIENT_IP", "DETAILS"]
    assert row.index("auth_succeeded") == header.index("EVENT")
    assert "checkpoint" not in runner.invoke(log, ["show", str(db)]).output


def test_report_counts(runner: CliRunner, db: Path) -> None:
    result = runner.invoke(log, ["report", str(db), "--since", "24h", "--json"])
    data = json.loads(result.output)
    assert data["entries"] == 7
    assert data["refusals_by_ip"] == [["198.51.100.1", 3], ["198.51.100.2", 1]]
    assert data["refusals_by_user"] == [["bob", 1]]
    assert data["refusals_by_reason"] == [["origin", 2], ["(none)", 1], ["rate", 1]]
    assert data["bans_by_ip"] == [["198.51.100.1", 1]]
    assert data["anomaly_by_user"] == [["bob", 1]]
    text = runner.invoke(log, ["report", str(db)])
    assert text.exit_code == 0 and "refusals by IP:" in text.output
    assert report(db, 7 * 86400).refusals_by_ip[0] == ("198.51.100.1", 3)
    assert report(db, 7 * 86400).entries == 8
    bad = runner.invoke(log, ["report", str(db), "--since", "yesterday"])
    assert bad.exit_code == 2
