"""Tests of the audit log; helpers shared by its modules."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from wsguard.audit import AuditConfig, AuditEvent, AuditWriter
from wsguard.core.clock import FakeClock

KEY = bytes(range(32))
T0 = 1_764_400_000.0


def ev(event: str = "auth_failed", severity: Any = "warning", **fields: Any) -> AuditEvent:
    """An event at ``T0`` unless ``time`` is given; other fields as given."""
    fields.setdefault("time", T0)
    fields.setdefault("details", {})
    return AuditEvent(event=event, severity=severity, **fields)


def write_log(
    path: Path, events: Iterable[AuditEvent], *, key: bytes = KEY, **settings: Any
) -> AuditWriter:
    """Write ``events`` through a real writer and close it (sealed)."""
    sink = "jsonl" if path.suffix == ".jsonl" else "sqlite"
    config = AuditConfig(sink=settings.pop("sink", sink), path=str(path), **settings)
    writer = AuditWriter(config, key, FakeClock(T0))
    for event in events:
        writer.emit(event)
    assert writer.close()
    return writer


def sql(path: Path, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the SQLite file and commit."""
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute(statement, args).fetchall()
        db.commit()
    return rows
