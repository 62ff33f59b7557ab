"""Verifying a whole audit log file.

Theory of operation:

* The chain starts at seq 1 with ``prev_hash`` = 64 zeros, or, after
  retention, at the signed anchor (its HMAC is checked first).
* Each record, in stored order, must: parse; carry a valid HMAC (else it was
  *edited*, or forged without the key); sit in the SQLite row of its own seq,
  with the row's query columns equal to the record's (else rows were
  *reordered* or edited); have the next seq (else a record was *deleted*,
  *inserted* or *reordered*); and link to the previous record's hash.
  Checkpoints must say ``count`` = their own seq. The first failure is
  reported with the seq where the chain breaks.
* Sealing: a cleanly closed log ends with a checkpoint. A log whose last
  record is not a checkpoint (or is empty, or ends in a torn JSON line) is
  "tail not sealed": the server crashed or the tail was cut. That fails unless
  ``allow_unsealed`` (for the log of a crashed server, verified up to its last
  record). A tail cut back exactly to an earlier checkpoint cannot be seen from
  the file alone: compare with the checkpoint lines in the server log.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from wsguard.audit.chain import CHECKPOINT, GENESIS, Anchor, record_ok
from wsguard.audit.store import SQLITE_COLUMNS, StoredRow, open_log

__all__ = ["VerifyResult", "verify_file", "verify_rows"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of :func:`verify_file`.

    Attributes:
        ok: the log verified (allowing an unsealed tail if asked to).
        count: records verified before the first problem (all of them when ok).
        first_bad_seq: where the chain breaks (``None`` when ok, or not tied to a seq).
        problem: what is wrong, in a few words (``None`` when ok).
        sealed: the last record is a checkpoint.
    """

    ok: bool
    count: int
    first_bad_seq: int | None
    problem: str | None
    sealed: bool = True


def _fail(count: int, seq: int | None, problem: str) -> VerifyResult:
    return VerifyResult(False, count, seq, problem, sealed=False)


def verify_rows(
    rows: Iterable[StoredRow], key: bytes, anchor: Anchor | None, allow_unsealed: bool = False
) -> VerifyResult:
    """Verify stored rows in order (see the module docstring)."""
    if anchor is not None and not anchor.valid(key):
        return _fail(0, anchor.seq, "retention anchor fails verification (forged or edited)")
    expected = anchor.seq if anchor is not None else 1
    prev_hash = anchor.prev_hash if anchor is not None else GENESIS
    count = 0
    last_checkpoint = expected - 1
    torn = False
    for row in rows:
        if row.torn:
            torn = True
            break
        where = row.row_seq if row.row_seq is not None else expected
        try:
            record = json.loads(row.text)
        except ValueError:
            return _fail(count, where, "entry unreadable")
        if not isinstance(record, dict) or not record_ok(key, record):
            return _fail(count, where, "entry edited or forged (HMAC mismatch)")
        seq = record["seq"]
        if row.row_seq is not None and seq != row.row_seq:
            return _fail(count, row.row_seq, f"row {row.row_seq} holds entry {seq} (reordered)")
        if row.columns is not None and row.columns != tuple(record[c] for c in SQLITE_COLUMNS):
            return _fail(count, seq, "row columns differ from the signed entry (edited)")
        if seq != expected:
            what = "deleted" if seq > expected else "inserted or reordered"
            return _fail(count, expected, f"expected seq {expected}, found {seq} (entry {what})")
        if record["prev_hash"] != prev_hash:
            return _fail(count, seq, "prev_hash mismatch (entry deleted, inserted or reordered)")
        if record["event"] == CHECKPOINT:
            if record["details"] != {"count": seq}:
                return _fail(count, seq, "checkpoint count mismatch")
            last_checkpoint = seq
        count += 1
        expected += 1
        prev_hash = record["hash"]
    sealed = count > 0 and last_checkpoint == expected - 1 and not torn
    if sealed:
        return VerifyResult(True, count, None, None)
    if count == 0:
        problem = "tail not sealed: the log has no entries"
    elif torn:
        problem = "tail not sealed: torn last line (crash during a write)"
    else:
        problem = (
            f"tail not sealed: {expected - 1 - last_checkpoint} entries after the last checkpoint"
        )
    if allow_unsealed:
        return VerifyResult(True, count, None, None, sealed=False)
    return VerifyResult(False, count, last_checkpoint + 1, problem, sealed=False)


def verify_file(
    path: str | os.PathLike[str], key: bytes, allow_unsealed: bool = False
) -> VerifyResult:
    """Verify a SQLite or JSON-lines audit log (chosen by header, then extension).

    Raises:
        FileNotFoundError: no such file.
    """
    try:
        with open_log(path) as (anchor, rows):
            return verify_rows(rows, key, anchor, allow_unsealed)
    except (sqlite3.DatabaseError, ValueError, KeyError, TypeError) as exc:
        return _fail(0, None, f"unreadable log: {exc}")
