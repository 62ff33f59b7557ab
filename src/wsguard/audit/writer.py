"""The audit writer: a bounded queue and one thread that signs and stores events.

Theory of operation:

* :meth:`AuditWriter.emit` runs on the event loop: it only appends to a deque
  (atomic, no lock, no wake-up), as a plain tuple (see :func:`_queued` for
  why). When ``queue_size`` events wait, the event is
  dropped and counted (``dropped``, and ``on_drop`` for the metrics) and a
  critical line is logged, at most once a second. The event loop never blocks
  on the log.
* One daemon thread looks for events every 100 ms and takes them in batches
  of up to 256: one transaction per batch and no per-event wake-up keep the log
  cheap under a connection storm (a reconnect storm went from 2,200 to 2,900
  handshakes/s). The interval sets the batch size under load, and SQLite's
  cost per entry falls with it (measured here: 5.5 us CPU per entry in batches
  of 28, what 20 ms gave at 1,400 handshakes/s; 3.2 us in batches of 140).
  It runs the processors (redaction, IP privacy), signs the records on a copy
  of the chain, and writes the batch in one sink call; only when the write
  succeeded does the chain advance. A batch the sink refuses is counted as
  dropped and logged.
* Checkpoints: after ``checkpoint_every`` records since the last checkpoint, or
  ``checkpoint_interval`` seconds with unsealed records, the thread appends a
  signed ``checkpoint`` record (details ``{"count": <its seq>}``). Each one is
  also logged (seq and hash) on the ``wsguard.audit`` logger so an operator has
  an outside copy.
* :meth:`AuditWriter.close` drains the queue and writes a final checkpoint, so a
  clean shutdown always leaves a log whose last record is a checkpoint
  ("sealed"). A log whose last record is not a checkpoint was not closed
  cleanly (a crash) or lost its tail: ``wsguard log verify`` reports it as
  "tail not sealed" unless told ``--allow-unsealed``. What no checkpoint can
  show by itself is a tail cut back exactly to an earlier checkpoint: the
  checkpoint lines in the server log (or a copy of the file) are the outside
  reference for that.
* Reopening a log that was not sealed (a crash) appends an ``audit_unsealed_tail``
  warning record, so the gap in sealing is itself on the record.
* Retention (``retention_days`` / ``retention_max_entries``) runs on the writer
  thread at start and then hourly, with the same chain (see
  :func:`wsguard.audit.retention.prune_sink`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from itertools import chain as flatten_chain
from typing import Any

from wsguard.audit.chain import CHECKPOINT, Chain, Record
from wsguard.audit.config import AuditConfig
from wsguard.audit.events import AuditEvent, Processor, ip_privacy, redact, run_processors
from wsguard.audit.retention import prune_sink
from wsguard.audit.sinks import Sink, open_sink
from wsguard.core.clock import Clock

__all__ = ["AuditWriter", "default_processors"]

logger = logging.getLogger("wsguard.audit")

_BATCH = 256
_POLL_S = 0.1  # the writer looks for events this often (see the module docstring)
_RETENTION_EVERY_S = 3600.0


def _queued(event: AuditEvent) -> tuple[Any, ...]:
    """``event`` flattened for the queue: its fields, then its details' keys and values.

    An event waits up to 100 ms, outliving young collections. The collector
    stops tracking a plain tuple of strings and numbers at its first pass; a
    named tuple (a subclass) it tracks as long as it lives, and a dict or a
    nested tuple keeps the tuple holding it tracked. Tracked, queued events were
    promoted to the older generations and walked by their collections: the
    guarded server's garbage collection went from 11.6 to 10.0 us a reused-token
    handshake (three alternating runs of 20,000 each).
    """
    details = event[-1]
    if not details:
        return event[:-1]
    return event[:-1] + tuple(flatten_chain.from_iterable(details.items()))


_FIELDS = len(AuditEvent._fields) - 1  # before the details


def _unqueued(item: tuple[Any, ...]) -> AuditEvent:
    if len(item) == _FIELDS:
        return AuditEvent(*item)
    details = dict(zip(item[_FIELDS::2], item[_FIELDS + 1 :: 2], strict=True))
    return AuditEvent._make((*item[:_FIELDS], details))


def default_processors(config: AuditConfig, key: bytes) -> list[Processor]:
    """Redaction, then the IP privacy rule of ``config.ip_mode`` (none for ``full``)."""
    if config.ip_mode == "full":  # keeps every address as it is: nothing to run
        return [redact]
    return [redact, ip_privacy(config.ip_mode, key)]


class AuditWriter:
    """Signs and stores audit events off the event loop.

    Args:
        config: the ``[audit]`` section.
        key: the audit key.
        clock: time for checkpoints, retention and the rate limit of the
            queue-full log line.
        sink: where records go; by default the one ``config`` names.
        processors: run on each event before it is signed; by default
            :func:`default_processors`.
        on_drop: called (from any thread) once per dropped event, e.g. a metric.

    Raises:
        AuditLogError: the existing log cannot be extended (tampered or unreadable).
    """

    def __init__(
        self,
        config: AuditConfig,
        key: bytes,
        clock: Clock,
        sink: Sink | None = None,
        *,
        processors: Sequence[Processor] | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sink = sink if sink is not None else open_sink(config)
        self._processors = list(
            processors if processors is not None else default_processors(config, key)
        )
        self._on_drop = on_drop
        self._pending: deque[tuple[Any, ...]] = deque()
        self._capacity = config.queue_size
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_full_log = float("-inf")
        self.written = 0
        self.dropped = 0
        self.checkpoints = 0
        self._chain: Chain = self._sink.open(key)
        self._unsealed = 0
        now = clock.now()
        self._last_seal = now
        self._next_retention = now
        self._resumed_unsealed = not self._chain.sealed
        self._thread = threading.Thread(target=self._run, name="wsguard-audit", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        """Events waiting for the writer thread."""
        return len(self._pending)

    @property
    def seq(self) -> int:
        """The last written record's seq."""
        return self._chain.seq

    # The event loop side.

    def emit(self, event: AuditEvent) -> None:
        """Queue ``event`` for writing; never blocks. Dropped (and counted) when full."""
        if self._stop.is_set():
            self._drop(1, "audit writer closed: event dropped")
            return
        # A deque append is atomic and takes no lock: the event loop pays
        # nanoseconds per event and never wakes the writer thread.
        if len(self._pending) >= self._capacity:
            self._drop(1, "audit queue full: event dropped")
            return
        self._pending.append(_queued(event))

    __call__ = emit  # so that the writer itself is a Guard audit sink

    def _drop(self, count: int, message: str) -> None:
        with self._lock:
            self.dropped += count
            now = self._clock.now()
            log = now - self._last_full_log >= 1.0
            if log:
                self._last_full_log = now
        if self._on_drop is not None:
            for _ in range(count):
                self._on_drop()
        if log:
            logger.critical(message)

    def close(self, timeout: float = 10.0) -> bool:
        """Write everything queued, a final checkpoint, and stop the thread.

        Returns:
            ``True`` when the thread finished within ``timeout`` seconds.
        """
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("audit writer did not finish within %.1f s", timeout)
            return False
        if self._pending:  # emitted while the thread was finishing
            late = len(self._pending)
            self._pending.clear()
            self._drop(late, "audit writer closed: event dropped")
        return True

    # The writer thread.

    def _run(self) -> None:
        try:
            if self._resumed_unsealed:
                tail = AuditEvent("audit_unsealed_tail", "warning", self._clock.now())
                self._store([tail])
            self._maybe_prune()
            while True:
                batch = self._take(wait=not self._stop.is_set())
                if batch:
                    self._write_events(batch)
                self._maybe_checkpoint(force=False)
                self._maybe_prune()
                if self._stop.is_set() and not batch and not self._pending:
                    break
            self._maybe_checkpoint(force=True)
        except Exception:  # never die silently; the log is a security control
            logger.exception("audit writer thread failed")
        finally:
            self._sink.close()

    def _take(self, *, wait: bool) -> list[AuditEvent]:
        """Up to a batch of queued events, rebuilt from their tuples (see :func:`_queued`)."""
        pending = self._pending
        if wait and len(pending) < _BATCH:
            # Poll rather than be woken per event: one transaction per batch
            # under load, and a close (``_stop``) ends the wait at once.
            self._stop.wait(_POLL_S)
        count = min(len(pending), _BATCH)
        return [_unqueued(pending.popleft()) for _ in range(count)]

    def _write_events(self, batch: list[AuditEvent]) -> None:
        chain = self._chain.copy()
        records: list[Record] = []
        written, unsealed, seals = 0, self._unsealed, []
        for event in batch:
            try:
                processed = run_processors(event, self._processors)
            except Exception:
                logger.exception("audit processor failed: event dropped")
                self._drop(1, "audit processor failed: event dropped")
                continue
            if processed is None:
                continue
            records.append(chain.record(processed))
            written += 1
            unsealed += 1
            if unsealed >= self.config.checkpoint_every:  # seal inside the batch
                seals.append(chain.checkpoint(self._clock.now()))
                records.append(seals[-1])
                unsealed = 0
        if records and self._commit(chain, records):
            self.written += written
            self._unsealed = unsealed
            for seal in seals:
                self._sealed(seal)

    def _store(self, events: list[AuditEvent]) -> None:
        chain = self._chain.copy()
        records = [chain.record(e) for e in events]
        if self._commit(chain, records):
            self._unsealed += len(records)

    def _commit(self, chain: Chain, records: list[Record]) -> bool:
        try:
            self._sink.write(records)
        except Exception:
            logger.exception("audit sink failed")
            self._drop(len(records), "audit sink failed: events dropped")
            return False
        self._chain.adopt(chain)
        return True

    def _maybe_checkpoint(self, *, force: bool) -> None:
        now = self._clock.now()
        due = self._unsealed >= self.config.checkpoint_every or (
            self._unsealed and now - self._last_seal >= self.config.checkpoint_interval
        )
        if not (due or (force and self._chain.last_event != CHECKPOINT)):
            return
        chain = self._chain.copy()
        record = chain.checkpoint(now)
        if self._commit(chain, [record]):
            self._unsealed = 0
            self._sealed(record)

    def _sealed(self, record: Record) -> None:
        self._last_seal = record["time"]
        self.checkpoints += 1
        logger.info("audit checkpoint seq=%d hash=%s", record["seq"], record["hash"])

    def _maybe_prune(self) -> None:
        config = self.config
        if config.retention_days is None and config.retention_max_entries is None:
            return
        now = self._clock.now()
        if now < self._next_retention:
            return
        self._next_retention = now + _RETENTION_EVERY_S
        max_age = config.retention_days * 86400 if config.retention_days is not None else None
        try:
            chain = self._chain.copy()
            records = prune_sink(self._sink, chain, now, max_age, config.retention_max_entries)
        except Exception:
            logger.exception("audit retention failed")
            return
        if records:
            self._chain.adopt(chain)
            self._unsealed = 0
            self._last_seal = now
