"""Reading an audit log file, whichever sink wrote it.

Theory of operation:

* A file is SQLite when it starts with the SQLite header, or (when empty or
  missing) when its name ends in ``.db``, ``.sqlite`` or ``.sqlite3``; anything
  else is JSON lines.
* SQLite: table ``entries(seq INTEGER PRIMARY KEY, time, event, severity, user,
  client_ip, record)`` where ``record`` is the canonical JSON of the record with
  its hash and the other columns are copies for queries (verify checks they
  match); table ``meta(name, value)`` holds the retention ``anchor``.
* JSON lines: one canonical record per line; after retention the first line is
  ``{"anchor": {...}}``. A last line without its newline is a torn write from a
  crash: it is reported as such and never part of the chain.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wsguard.audit.chain import Anchor

__all__ = ["LogKind", "StoredRow", "log_kind", "open_log", "SQLITE_SCHEMA"]

LogKind = Literal["sqlite", "jsonl"]
_SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries(
    seq INTEGER PRIMARY KEY, time REAL NOT NULL, event TEXT NOT NULL,
    severity TEXT NOT NULL, user TEXT, client_ip TEXT, record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_time ON entries(time);
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
SQLITE_COLUMNS = ("time", "event", "severity", "user", "client_ip")


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One stored record as read, before any check.

    Attributes:
        text: the record's JSON text.
        row_seq: the SQLite row's ``seq`` (``None`` for JSON lines).
        columns: the SQLite copies of :data:`SQLITE_COLUMNS` (``None`` for JSON lines).
        torn: a JSON-lines last line without its newline (a crash mid-write).
    """

    text: str
    row_seq: int | None = None
    columns: tuple[Any, ...] | None = None
    torn: bool = False


def log_kind(path: str | os.PathLike[str]) -> LogKind:
    """``"sqlite"`` or ``"jsonl"``, by the file's header, else by its name."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        head = b""
    if head == _SQLITE_HEADER:
        return "sqlite"
    if not head and str(path).lower().endswith(_SQLITE_SUFFIXES):
        return "sqlite"
    return "jsonl"


def connect_sqlite(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection in autocommit mode (explicit ``BEGIN``), usable from any thread."""
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


@contextmanager
def open_log(path: str | os.PathLike[str]) -> Iterator[tuple[Anchor | None, Iterator[StoredRow]]]:
    """Open an existing log for reading.

    Yields:
        ``(anchor, rows)``: the retention anchor if any, and the rows in order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the anchor is unreadable.
        sqlite3.DatabaseError: not an audit database.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if log_kind(path) == "sqlite":
        with closing(connect_sqlite(path)) as db:
            found = db.execute("SELECT value FROM meta WHERE name = 'anchor'").fetchone()
            anchor = Anchor.from_json(found[0]) if found else None
            cursor = db.execute(
                "SELECT seq, record, time, event, severity, user, client_ip"
                " FROM entries ORDER BY seq"
            )
            yield anchor, (StoredRow(r[1], r[0], tuple(r[2:])) for r in cursor)
        return
    with open(path, encoding="utf-8", errors="replace", newline="\n") as handle:
        anchor, first = _jsonl_anchor(handle.readline())
        yield anchor, _jsonl_rows(first, handle)


def _jsonl_anchor(line: str) -> tuple[Anchor | None, str]:
    """The anchor if ``line`` is one (and ``""``), else ``(None, line)``."""
    if not line.startswith('{"anchor":'):
        return None, line
    data = json.loads(line)
    return Anchor.from_json(json.dumps(data["anchor"])), ""


def _jsonl_rows(first: str, handle: Any) -> Iterator[StoredRow]:
    line: str = first or handle.readline()
    while line:
        if line.endswith("\n"):
            if line.strip():
                yield StoredRow(line.rstrip("\n"))
        else:
            yield StoredRow(line, torn=True)
        line = handle.readline()
