"""Retention by age or count that keeps what remains verifiable.

Theory of operation:

* The first kept seq is the highest of: the oldest stored seq, the first
  record not older than ``max_age_s`` (everything goes when none is), and
  ``last seq - max_entries + 1``. Everything from the first recent record on is
  kept, even an older record after it (clocks step back).
* The sink deletes everything before it and stores the signed anchor
  ``(first kept seq, its prev_hash)`` in the same step (SQLite: one
  transaction; JSON lines: an atomic file replace). Then a ``retention`` record
  (details: ``first_kept_seq``, ``anchor_prev_hash``, ``removed``) and a
  checkpoint are appended to the chain, so the pruning itself is on the record.
* ``wsguard log verify`` starts at the anchor instead of seq 1.
* :func:`apply_retention` works on a file no writer has open: a running server
  prunes through its own writer thread (``audit.retention_*``).
"""

from __future__ import annotations

import os

from wsguard.audit.chain import RETENTION, Chain, Record
from wsguard.audit.events import AuditEvent
from wsguard.audit.sinks import JsonlSink, Sink, SqliteSink
from wsguard.audit.store import log_kind

__all__ = ["apply_retention", "first_kept_seq", "prune_sink"]


def first_kept_seq(
    sink: Sink, chain: Chain, now: float, max_age_s: float | None, max_entries: int | None
) -> int | None:
    """The first seq to keep, or ``None`` when nothing is to be deleted."""
    oldest = sink.oldest_seq()
    if oldest is None:
        return None
    first = oldest
    if max_age_s is not None:
        recent = sink.first_seq_since(now - max_age_s)
        first = max(first, recent if recent is not None else chain.seq + 1)
    if max_entries is not None:
        first = max(first, chain.seq - max_entries + 1)
    return min(first, chain.seq + 1) if first > oldest else None


def prune_sink(
    sink: Sink, chain: Chain, now: float, max_age_s: float | None, max_entries: int | None
) -> list[Record]:
    """Prune an open sink and append the retention record and a checkpoint.

    Returns:
        The records appended (none when there was nothing to delete). ``chain``
        has advanced past them.
    """
    oldest = sink.oldest_seq()
    first = first_kept_seq(sink, chain, now, max_age_s, max_entries)
    if first is None or oldest is None:
        return []
    anchor = sink.prune(chain, first)
    details: dict[str, str | int | float | bool | None] = {
        "first_kept_seq": first,
        "anchor_prev_hash": anchor.prev_hash,
        "removed": first - oldest,
    }
    records = [chain.record(AuditEvent(RETENTION, "info", now, details=details))]
    records.append(chain.checkpoint(now))
    sink.write(records)
    return records


def apply_retention(
    path: str | os.PathLike[str],
    key: bytes,
    now: float,
    max_age_s: float | None = None,
    max_entries: int | None = None,
) -> int:
    """Delete the oldest records of a closed log file, keeping the rest verifiable.

    Supports SQLite and JSON-lines files. No writer may have the file open.

    Returns:
        How many records were deleted.

    Raises:
        AuditLogError: the file's last record fails verification.
    """
    sink: Sink = SqliteSink(str(path)) if log_kind(path) == "sqlite" else JsonlSink(str(path))
    chain = sink.open(key)
    try:
        oldest = sink.oldest_seq()
        records = prune_sink(sink, chain, now, max_age_s, max_entries)
    finally:
        sink.close()
    if not records or oldest is None:
        return 0
    return int(records[0]["details"]["first_kept_seq"]) - oldest
