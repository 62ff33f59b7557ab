"""The writer: continuing a log, refusing a tampered one, never blocking, sinks."""

from __future__ import annotations

import gc
import io
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.audit import KEY, T0, ev, sql, write_log
from wsguard.audit import (
    AuditConfig,
    AuditEvent,
    AuditLogError,
    AuditWriter,
    DropEvent,
    SqliteSink,
    StdoutSink,
    verify_file,
)
from wsguard.audit.chain import Record, canonical
from wsguard.audit.sinks import open_sink
from wsguard.core.clock import FakeClock


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    for suffix in (".db", ".jsonl"):
        path = tmp_path / f"a{suffix}"
        write_log(path, [ev() for _ in range(5)])
        write_log(path, [ev(event="auth_succeeded") for _ in range(3)])
        result = verify_file(path, KEY)
        assert (result.ok, result.count, result.sealed) == (True, 10, True), suffix


def test_reopen_after_a_crash_records_the_unsealed_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path, [ev() for _ in range(5)])
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:10])  # lost seal, torn line
    write_log(path, [ev()])
    events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert events[5:] == ["audit_unsealed_tail", "auth_failed", "checkpoint"]
    assert verify_file(path, KEY).ok


def test_refuses_to_extend_a_tampered_file(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    write_log(path, [ev() for _ in range(5)])
    (text,) = sql(path, "SELECT record FROM entries WHERE seq = 6")[0]
    record = json.loads(text)
    record["details"] = {"count": 99}
    sql(path, "UPDATE entries SET record = ? WHERE seq = 6", canonical(record))
    with pytest.raises(AuditLogError, match="fails verification"):
        AuditWriter(AuditConfig(path=str(path)), KEY, FakeClock(T0))
    with pytest.raises(AuditLogError):
        open_sink(AuditConfig(path=str(path)), KEY)


def test_refuses_a_file_signed_with_another_key(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_log(path, [ev()])
    with pytest.raises(AuditLogError):
        AuditWriter(AuditConfig(sink="jsonl", path=str(path)), b"other", FakeClock(T0))


def test_open_sink_with_key_then_writer(tmp_path: Path) -> None:
    config = AuditConfig(path=str(tmp_path / "a.db"))
    writer = AuditWriter(config, KEY, FakeClock(T0), open_sink(config, KEY))
    writer.emit(ev())
    assert writer.close()
    assert verify_file(config.path, KEY).count == 2


class BlockedSink(SqliteSink):
    """A real SQLite sink whose writes wait until released."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, records: Sequence[Record]) -> None:
        self.entered.set()
        self.release.wait(10)
        super().write(records)


def test_full_queue_drops_counts_and_never_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = AuditConfig(path=str(tmp_path / "a.db"), queue_size=5)
    sink = BlockedSink(config.path)
    drops: list[int] = []
    writer = AuditWriter(config, KEY, FakeClock(T0), sink, on_drop=lambda: drops.append(1))
    writer.emit(ev())
    assert sink.entered.wait(5)  # the thread is stuck in write with one event
    caplog.set_level(logging.CRITICAL, logger="wsguard.audit")
    started = time.monotonic()
    for _ in range(100):
        writer.emit(ev())
    assert time.monotonic() - started < 0.5
    assert writer.dropped == 95 == len(drops)
    full = [r for r in caplog.records if r.getMessage() == "audit queue full: event dropped"]
    assert len(full) == 1  # once per second at most; the fake clock stands still
    sink.release.set()
    assert writer.close()
    assert writer.written == 6
    assert verify_file(config.path, KEY).count == 7


def test_queued_events_are_left_to_reference_counting_and_stored_whole(tmp_path: Path) -> None:
    """Waiting events are tuples the collector stops tracking; they come out unchanged."""
    config = AuditConfig(path=str(tmp_path / "a.db"))
    sink = BlockedSink(config.path)
    writer = AuditWriter(config, KEY, FakeClock(T0), sink)
    writer.emit(ev())
    assert sink.entered.wait(5)  # the thread is stuck in write: the next events wait
    events = [
        ev("auth_succeeded", "info", session_id="s1", user="alice", client_ip="10.0.0.1"),
        ev(details={"status": 401, "reason": "bad token", "after": 1.5, "ok": False, "x": None}),
        AuditEvent("token_refreshed", "info", T0 + 1),  # the default, read-only details
    ]
    for event in events:
        writer.emit(event)
    gc.collect(0)  # a young collection: what it leaves tracked would be promoted
    assert writer.queued == 3
    assert not [item for item in writer._pending if gc.is_tracked(item)]
    sink.release.set()
    assert writer.close()
    rows = sql(Path(config.path), "SELECT record FROM entries ORDER BY seq")
    stored = [json.loads(text) for (text,) in rows][1:4]
    fields = ("event", "severity", "time", "request_id", "session_id", "user", "client_ip")
    assert [tuple(r[f] for f in fields) for r in stored] == [e[:7] for e in events]
    assert [r["details"] for r in stored] == [dict(e.details) for e in events]


def test_time_based_checkpoint(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    config = AuditConfig(path=str(tmp_path / "a.db"), checkpoint_interval=5)
    writer = AuditWriter(config, KEY, clock)
    writer.emit(ev())
    deadline = time.monotonic() + 5
    while writer.written < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    clock.advance(6)
    while writer.checkpoints < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.checkpoints == 1
    assert verify_file(config.path, KEY).sealed
    assert writer.close()
    assert writer.checkpoints == 1  # already sealed: no second checkpoint


def test_processor_drop_event_is_not_a_loss(tmp_path: Path) -> None:
    def no_health(event: AuditEvent) -> AuditEvent:
        if event.event == "health":
            raise DropEvent
        return event

    config = AuditConfig(sink="jsonl", path=str(tmp_path / "a.jsonl"))
    writer = AuditWriter(config, KEY, FakeClock(T0), processors=[no_health])
    writer.emit(ev(event="health"))
    writer.emit(ev())
    assert writer.close()
    assert (writer.written, writer.dropped) == (1, 0)


def test_stdout_sink_writes_canonical_lines() -> None:
    stream = io.StringIO()
    writer = AuditWriter(AuditConfig(sink="stdout"), KEY, FakeClock(T0), StdoutSink(stream))
    writer.emit(ev(user="alice"))
    assert writer.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["event"] for r in lines] == ["auth_failed", "checkpoint"]
    assert lines[0]["user"] == "alice"


def test_emit_after_close_is_dropped(tmp_path: Path) -> None:
    writer = write_log(tmp_path / "a.db", [ev()])
    writer.emit(ev())
    assert writer.dropped == 1


def test_a_new_sqlite_log_has_16_kib_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """The page size only applies to a new file; an existing log is extended as it is."""
    import sqlite3

    from wsguard.audit.sinks import SQLITE_PAGE_SIZE, SqliteSink

    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.execute("PRAGMA page_size=4096")
    db.execute("CREATE TABLE earlier(x)")  # the file exists, with 4 KiB pages
    db.commit()
    db.close()
    for path, expected in ((tmp_path / "new.db", SQLITE_PAGE_SIZE), (old, 4096)):
        sink = SqliteSink(str(path))
        sink.open(b"k" * 32)
        assert sink.db.execute("PRAGMA page_size").fetchone()[0] == expected
        sink.close()
