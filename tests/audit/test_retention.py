"""Retention deletes the oldest entries and leaves the rest verifiable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.audit import KEY, T0, ev, sql, write_log
from wsguard.audit import apply_retention, verify_file
from wsguard.audit.chain import Anchor


def _events(n: int) -> list:  # type: ignore[type-arg]
    return [ev(time=T0 + i * 3600, details={"n": i}) for i in range(n)]


@pytest.mark.parametrize("name", ["a.db", "a.jsonl"])
def test_by_count_keeps_the_rest_verifiable(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_log(path, _events(50))  # 50 entries + 1 checkpoint
    assert apply_retention(path, KEY, T0 + 100 * 3600, max_entries=10) == 41
    result = verify_file(path, KEY)
    assert (result.ok, result.count, result.sealed) == (True, 12, True)


def test_by_age(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    write_log(path, _events(48))
    now = T0 + 48 * 3600
    removed = apply_retention(path, KEY, now, max_age_s=24 * 3600 + 1)
    assert removed == 24
    first = sql(path, "SELECT MIN(seq) FROM entries")[0][0]
    assert first == 25
    assert verify_file(path, KEY).ok
    retention = json.loads(sql(path, "SELECT record FROM entries WHERE event = 'retention'")[0][0])
    assert retention["details"]["first_kept_seq"] == 25
    assert apply_retention(path, KEY, now, max_age_s=24 * 3600 + 1) == 0  # nothing more


def test_everything_old_is_deleted_and_still_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    write_log(path, _events(5))
    assert apply_retention(path, KEY, T0 + 10**6, max_age_s=60) == 6
    assert verify_file(path, KEY).count == 2  # the retention record and its checkpoint


def test_deleting_more_after_retention_fails(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    write_log(path, _events(30))
    apply_retention(path, KEY, T0, max_entries=10)
    sql(path, "DELETE FROM entries WHERE seq = (SELECT MIN(seq) FROM entries)")
    assert not verify_file(path, KEY).ok


def test_forged_anchor_fails(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    write_log(path, _events(30))
    apply_retention(path, KEY, T0, max_entries=10)
    sql(path, "DELETE FROM entries WHERE seq < 25")
    forged = Anchor.make(b"not the key", 25, "0" * 64)
    sql(path, "UPDATE meta SET value = ? WHERE name = 'anchor'", forged.to_json())
    result = verify_file(path, KEY)
    assert not result.ok and result.problem is not None and "anchor" in result.problem


def test_writer_applies_configured_retention(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    write_log(path, _events(40))
    write_log(path, [ev()], retention_max_entries=5)
    assert sql(path, "SELECT COUNT(*) FROM entries")[0][0] <= 10
    assert verify_file(path, KEY).ok
