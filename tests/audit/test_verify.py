"""The hash chain and verify: intact logs pass, every kind of tampering is caught."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from tests.audit import KEY, T0, ev, sql, write_log
from wsguard.audit import verify_file
from wsguard.audit.chain import GENESIS, canonical


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    write_log(path, [ev(user=f"u{i}", details={"reason": "bad_token", "n": i}) for i in range(20)])
    return path


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_log(path, [ev(user=f"u{i}", details={"n": i}) for i in range(20)])
    return path


def test_intact_sqlite_log_verifies_and_is_sealed(db: Path) -> None:
    result = verify_file(db, KEY)
    assert (result.ok, result.count, result.sealed, result.problem) == (True, 21, True, None)
    records = [json.loads(r[0]) for r in sql(db, "SELECT record FROM entries ORDER BY seq")]
    assert records[0]["prev_hash"] == GENESIS
    assert [r["seq"] for r in records] == list(range(1, 22))
    assert records[-1]["event"] == "checkpoint"
    assert records[-1]["details"] == {"count": 21}
    for before, after in zip(records, records[1:], strict=False):
        assert after["prev_hash"] == before["hash"]
    body = canonical({k: v for k, v in records[3].items() if k != "hash"}).encode()
    assert records[3]["hash"] == hmac.new(KEY, body, hashlib.sha256).hexdigest()


def test_intact_jsonl_log_verifies(jsonl: Path) -> None:
    assert verify_file(jsonl, KEY).ok
    lines = jsonl.read_text().splitlines()
    assert lines[0] == canonical(json.loads(lines[0]))  # canonical form on disk


def test_wrong_key_fails(db: Path) -> None:
    result = verify_file(db, b"another key")
    assert (result.ok, result.first_bad_seq) == (False, 1)


def test_edited_details_fail_at_that_seq(db: Path) -> None:
    (text,) = sql(db, "SELECT record FROM entries WHERE seq = 7")[0]
    record = json.loads(text)
    record["details"]["reason"] = "nothing to see"
    sql(db, "UPDATE entries SET record = ? WHERE seq = 7", canonical(record))
    result = verify_file(db, KEY)
    assert (result.ok, result.first_bad_seq, result.count) == (False, 7, 6)
    assert result.problem is not None and "HMAC" in result.problem


def test_edited_query_column_fails(db: Path) -> None:
    sql(db, "UPDATE entries SET user = 'mallory' WHERE seq = 4")
    result = verify_file(db, KEY)
    assert (result.ok, result.first_bad_seq) == (False, 4)


def test_deleted_row_fails(db: Path) -> None:
    sql(db, "DELETE FROM entries WHERE seq = 5")
    result = verify_file(db, KEY)
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert result.problem is not None and "deleted" in result.problem


def test_deleted_first_row_fails(db: Path) -> None:
    sql(db, "DELETE FROM entries WHERE seq = 1")
    assert verify_file(db, KEY).first_bad_seq == 1


def test_swapped_rows_fail(db: Path) -> None:
    (a,), (b,) = sql(db, "SELECT record FROM entries WHERE seq IN (8, 9) ORDER BY seq")
    sql(db, "UPDATE entries SET record = ? WHERE seq = 8", b)
    sql(db, "UPDATE entries SET record = ? WHERE seq = 9", a)
    result = verify_file(db, KEY)
    assert (result.ok, result.first_bad_seq) == (False, 8)


def test_renumbered_swap_fails(db: Path) -> None:
    # Swap whole rows (record and columns) so every row holds its own seq number.
    rows = sql(db, "SELECT * FROM entries WHERE seq IN (8, 9) ORDER BY seq")
    sql(db, "DELETE FROM entries WHERE seq IN (8, 9)")
    for seq, row in zip((8, 9), reversed(rows), strict=True):
        sql(db, "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", seq, *row[1:])
    assert verify_file(db, KEY).first_bad_seq == 8


def test_forged_row_without_the_key_fails(db: Path) -> None:
    (text,) = sql(db, "SELECT record FROM entries WHERE seq = 21")[0]
    last = json.loads(text)
    forged = dict(last, seq=22, event="auth_succeeded", details={}, prev_hash=last["hash"])
    body = canonical({k: v for k, v in forged.items() if k != "hash"}).encode()
    forged["hash"] = hmac.new(b"guessed key", body, hashlib.sha256).hexdigest()
    sql(
        db,
        "INSERT INTO entries VALUES (22, ?, 'auth_succeeded', 'warning', NULL, NULL, ?)",
        forged["time"],
        canonical(forged),
    )
    result = verify_file(db, KEY)
    assert (result.ok, result.first_bad_seq) == (False, 22)


def test_jsonl_deleted_inserted_and_reordered_lines_fail(jsonl: Path) -> None:
    lines = jsonl.read_text().splitlines(keepends=True)
    cases = {
        "deleted": lines[:4] + lines[5:],
        "duplicated": lines[:5] + [lines[3]] + lines[5:],
        "reordered": lines[:4] + [lines[5], lines[4]] + lines[6:],
    }
    for name, content in cases.items():
        jsonl.write_text("".join(content))
        result = verify_file(jsonl, KEY)
        assert not result.ok, name
        assert result.first_bad_seq in (5, 6), name


def test_jsonl_cut_tail_is_unsealed(jsonl: Path) -> None:
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(lines[:-3]))
    result = verify_file(jsonl, KEY)
    assert (result.ok, result.sealed, result.first_bad_seq) == (False, False, 1)
    assert result.problem is not None and result.problem.startswith("tail not sealed")
    allowed = verify_file(jsonl, KEY, allow_unsealed=True)
    assert (allowed.ok, allowed.count, allowed.sealed) == (True, 18, False)


def test_torn_last_line_is_unsealed_not_corrupt(jsonl: Path) -> None:
    with jsonl.open("a") as handle:
        handle.write('{"seq":22,"ti')
    result = verify_file(jsonl, KEY)
    assert not result.ok and result.problem is not None and "torn" in result.problem
    assert verify_file(jsonl, KEY, allow_unsealed=True).count == 21


def test_empty_log_is_unsealed(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert not verify_file(path, KEY).ok
    assert verify_file(path, KEY, allow_unsealed=True).ok


def test_sniffs_sqlite_whatever_the_name(db: Path, tmp_path: Path) -> None:
    renamed = db.rename(tmp_path / "audit.log")
    assert verify_file(renamed, KEY).ok


def test_checkpoints_every_n_entries(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    write_log(path, [ev() for _ in range(25)], checkpoint_every=10)
    events = [e for (e,) in sql(path, "SELECT event FROM entries ORDER BY seq")]
    assert events.count("checkpoint") == 3
    assert events[-1] == "checkpoint"
    assert verify_file(path, KEY).ok


def test_not_a_log_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("hello\n")
    result = verify_file(path, KEY)
    assert not result.ok and result.first_bad_seq == 1
    assert T0  # keep the helper import used
