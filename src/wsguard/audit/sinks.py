"""Where signed records go: SQLite (the default), JSON lines, or stdout.

Theory of operation:

* :meth:`Sink.open` opens (or creates) the file and returns the :class:`Chain`
  positioned after its last record, so a restarted server continues the same
  chain. It first checks that last record's HMAC (and, for SQLite, that it
  matches its row); a file that fails is refused with :exc:`AuditLogError`
  rather than extended. Only the last record is checked, to keep startup fast:
  ``wsguard log verify`` checks the whole file.
* :meth:`Sink.write` stores one batch durably: one SQLite transaction (WAL,
  ``synchronous=NORMAL``: a committed batch survives a process crash), or one
  write, flush and ``fsync`` of JSON lines. A failed batch is not stored at all
  (SQLite rolls back), so the writer keeps its chain position unchanged.
* :meth:`Sink.prune` deletes the records before ``first_kept`` and stores the
  signed anchor of what remains (see :mod:`wsguard.audit.chain`). SQLite does
  it in one transaction; JSON lines rewrite the file and atomically replace it.
  Stdout cannot prune.
* The sink is used by one thread at a time (the writer thread after ``open``).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from wsguard.audit.chain import (
    Anchor,
    AuditLogError,
    Chain,
    Record,
    canonical,
    record_ok,
    record_text,
)
from wsguard.audit.config import AuditConfig
from wsguard.audit.store import SQLITE_SCHEMA, connect_sqlite, log_kind

__all__ = ["JsonlSink", "Sink", "SqliteSink", "StdoutSink", "open_sink"]

logger = logging.getLogger("wsguard.audit")
SQLITE_PAGE_SIZE = 16_384  # bytes, for a new log


class Sink:
    """Base class: stores signed records."""

    path: str | None = None
    _opened: Chain | None = None

    def open(self, key: bytes) -> Chain:
        """Open the store; the chain positioned after its last record.

        Opening an open sink returns the position found when it was opened.

        Raises:
            AuditLogError: the file cannot be extended (unreadable, or its last
                record or anchor fails verification).
        """
        if self._opened is None:
            self._opened = self._open(key)
        elif self._opened.key != key:
            raise AuditLogError("the audit sink was opened with another key")
        return self._opened.copy()

    def _open(self, key: bytes) -> Chain:
        return Chain(key)

    def write(self, records: Sequence[Record]) -> None:
        """Store ``records`` durably, all or none."""
        raise NotImplementedError

    def oldest_seq(self) -> int | None:
        """The first stored record's seq (``None`` when empty)."""
        return None

    def first_seq_since(self, cutoff: float) -> int | None:
        """The lowest seq of a record at or after ``cutoff`` (``None``: none)."""
        return None

    def prune(self, chain: Chain, first_kept: int) -> Anchor:
        """Delete records before ``first_kept``; store and return the anchor of the rest."""
        raise AuditLogError(f"{type(self).__name__} does not support retention")

    def close(self) -> None:
        """Release the file."""


def _resume(
    key: bytes, path: str, last: Record | None, row_seq: int | None, anchor: Anchor | None
) -> Chain:
    """The chain after ``last``; refuse a last record or anchor that fails its HMAC."""
    if anchor is not None and not anchor.valid(key):
        raise AuditLogError(f"{path}: the retention anchor fails verification; refusing to append")
    if last is None:
        if anchor is not None:
            return Chain(key, anchor.seq - 1, anchor.prev_hash)
        return Chain(key)
    if not record_ok(key, last) or (row_seq is not None and last["seq"] != row_seq):
        raise AuditLogError(
            f"{path}: the last entry (seq {row_seq or last.get('seq')}) fails verification "
            "(wrong key or tampered file); refusing to append: run `wsguard log verify`"
        )
    return Chain(key, last["seq"], last["hash"], last["event"])


def _parse(text: str, path: str) -> Record:
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise AuditLogError(f"{path}: the last entry is unreadable; refusing to append")
    return record


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction: committed when the block succeeds, else rolled back."""
    db.execute("BEGIN")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class SqliteSink(Sink):
    """A SQLite file in WAL mode; one transaction per batch.

    Args:
        path: the database file, created if missing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise AuditLogError("the sqlite sink is not open")
        return self._db

    def _open(self, key: bytes) -> Chain:
        path = str(self.path)
        if Path(path).exists() and log_kind(path) != "sqlite":
            raise AuditLogError(f"{path}: not a SQLite file")
        db = connect_sqlite(path)
        try:
            # A new log gets 16 KiB pages: a batch of entries spans fewer pages
            # and WAL frames (SQLite CPU per entry 2.9 -> 2.5 us in batches of
            # 250, measured). Only takes effect before the first table exists,
            # and before WAL mode: an existing log keeps its page size.
            db.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SQLITE_SCHEMA)
            row = db.execute("SELECT seq, record FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            found = db.execute("SELECT value FROM meta WHERE name = 'anchor'").fetchone()
            anchor = Anchor.from_json(found[0]) if found else None
            last = _parse(row[1], path) if row else None
            chain = _resume(key, path, last, row[0] if row else None, anchor)
        except (sqlite3.DatabaseError, ValueError) as exc:
            db.close()
            raise AuditLogError(f"{path}: not a readable audit log ({exc})") from exc
        except AuditLogError:
            db.close()
            raise
        self._db = db
        return chain

    def write(self, records: Sequence[Record]) -> None:
        db = self.db
        rows = [
            (
                r["seq"],
                r["time"],
                r["event"],
                r["severity"],
                r["user"],
                r["client_ip"],
                record_text(r),
            )
            for r in records
        ]
        with _transaction(db):
            db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def oldest_seq(self) -> int | None:
        value = self.db.execute("SELECT MIN(seq) FROM entries").fetchone()[0]
        return int(value) if value is not None else None

    def first_seq_since(self, cutoff: float) -> int | None:
        value = self.db.execute(
            "SELECT MIN(seq) FROM entries WHERE time >= ?", (cutoff,)
        ).fetchone()
        return int(value[0]) if value[0] is not None else None

    def prune(self, chain: Chain, first_kept: int) -> Anchor:
        db = self.db
        row = db.execute("SELECT record FROM entries WHERE seq = ?", (first_kept,)).fetchone()
        prev_hash = str(json.loads(row[0])["prev_hash"]) if row else chain.prev_hash
        anchor = Anchor.make(chain.key, first_kept, prev_hash)
        with _transaction(db):
            db.execute("DELETE FROM entries WHERE seq < ?", (first_kept,))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('anchor', ?)", (anchor.to_json(),))
        return anchor

    def close(self) -> None:
        self._opened = None
        if self._db is not None:
            self._db.close()
            self._db = None


class JsonlSink(Sink):
    """JSON lines: one canonical record per line; flush and ``fsync`` per batch.

    Args:
        path: the file, created if missing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    def _open(self, key: bytes) -> Chain:
        path = str(self.path)
        anchor: Anchor | None = None
        last: str | None = None
        if Path(path).exists():
            if log_kind(path) != "jsonl":
                raise AuditLogError(f"{path}: not a JSON-lines file")
            anchor, last = self._scan(path)
        record = _parse(last, path) if last else None
        chain = _resume(key, path, record, None, anchor)
        self._handle = open(path, "ab")  # noqa: SIM115 (kept open until close)
        return chain

    @staticmethod
    def _scan(path: str) -> tuple[Anchor | None, str | None]:
        """The anchor and the last complete line; cut a torn last line (crash)."""
        anchor: Anchor | None = None
        last: str | None = None
        good_end = 0
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle):
                if not raw.endswith(b"\n"):
                    break
                good_end += len(raw)
                text = raw.decode("utf-8", "replace").rstrip("\n")
                if number == 0 and text.startswith('{"anchor":'):
                    try:
                        anchor = Anchor.from_json(json.dumps(json.loads(text)["anchor"]))
                    except (ValueError, KeyError, TypeError) as exc:
                        raise AuditLogError(f"{path}: unreadable anchor") from exc
                elif text.strip():
                    last = text
        if good_end < os.path.getsize(path):
            logger.warning("audit log %s: cutting a torn last line left by a crash", path)
            os.truncate(path, good_end)
        return anchor, last

    def write(self, records: Sequence[Record]) -> None:
        if self._handle is None:
            raise AuditLogError("the jsonl sink is not open")
        data = "".join(record_text(r) + "\n" for r in records).encode("utf-8")
        self._handle.write(data)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def _records(self) -> list[tuple[int, str, str]]:
        """``(seq, prev_hash, line)`` for every record in the file."""
        found: list[tuple[int, str, str]] = []
        with open(str(self.path), encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip() and not line.startswith('{"anchor":'):
                    data: dict[str, Any] = json.loads(line)
                    found.append((int(data["seq"]), str(data["prev_hash"]), line))
        return found

    def oldest_seq(self) -> int | None:
        found = self._records()
        return found[0][0] if found else None

    def first_seq_since(self, cutoff: float) -> int | None:
        seqs = [seq for seq, _, line in self._records() if json.loads(line)["time"] >= cutoff]
        return min(seqs) if seqs else None

    def prune(self, chain: Chain, first_kept: int) -> Anchor:
        path = str(self.path)
        kept = [(seq, prev, line) for seq, prev, line in self._records() if seq >= first_kept]
        prev_hash = kept[0][1] if kept else chain.prev_hash
        anchor = Anchor.make(chain.key, first_kept, prev_hash)
        temp = f"{path}.prune-tmp"
        with open(temp, "w", encoding="utf-8", newline="\n") as out:
            out.write(canonical({"anchor": json.loads(anchor.to_json())}) + "\n")
            out.writelines(line for _, _, line in kept)
            out.flush()
            os.fsync(out.fileno())
        if self._handle is not None:
            self._handle.close()
        os.replace(temp, path)
        self._handle = open(path, "ab")  # noqa: SIM115
        return anchor

    def close(self) -> None:
        self._opened = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class StdoutSink(Sink):
    """Canonical records on standard output, one per line; a fresh chain per run."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def write(self, records: Sequence[Record]) -> None:
        stream = self._stream or sys.stdout
        stream.write("".join(record_text(r) + "\n" for r in records))
        stream.flush()


def open_sink(config: AuditConfig, key: bytes | None = None) -> Sink:
    """The sink that ``config`` names; opened now when ``key`` is given.

    Raises:
        AuditLogError: with ``key``, when the existing file cannot be extended.
    """
    sink: Sink
    if config.sink == "sqlite":
        sink = SqliteSink(config.path)
    elif config.sink == "jsonl":
        sink = JsonlSink(config.path)
    else:
        sink = StdoutSink()
    if key is not None:
        sink.open(key)
    return sink
