"""Reading the audit log for people: filtered listings and a summary report.

Queries read the stored records as they are; they do not verify the chain
(``wsguard log verify`` does). Checkpoint and retention records are left out of
listings unless asked for by event name.
"""

from __future__ import annotations

import json
import os
import time as _time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from wsguard.audit.chain import CHECKPOINT, RETENTION, Record
from wsguard.audit.store import open_log

__all__ = ["ANOMALY_EVENTS", "BAN_EVENTS", "REFUSAL_EVENTS", "Report", "records", "report", "show"]

REFUSAL_EVENTS = frozenset({"handshake_refused", "auth_failed"})
BAN_EVENTS = frozenset({"ban_added"})
ANOMALY_EVENTS = frozenset({"anomaly_disconnect", "disconnect_abuse"})
_INTERNAL = frozenset({CHECKPOINT, RETENTION})
_TOP = 10


def records(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Every readable record of the log, in order (unreadable lines are skipped)."""
    with open_log(path) as (_, rows):
        for row in rows:
            if row.torn:
                continue
            try:
                record = json.loads(row.text)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def show(
    path: str | os.PathLike[str],
    event: str | None = None,
    severity: str | None = None,
    user: str | None = None,
    ip: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = 1000,
) -> list[Record]:
    """The records matching every given filter, oldest first.

    Args:
        path: the log file.
        event, severity, user, ip: exact matches (``ip`` against ``client_ip``).
        since, until: time bounds, seconds since the epoch (``since`` included).
        limit: keep only the most recent ``limit`` matches (``None``: all).
    """
    found: deque[Record] = deque(maxlen=limit)
    for record in records(path):
        if event is None and record.get("event") in _INTERNAL:
            continue
        if (
            (event is not None and record.get("event") != event)
            or (severity is not None and record.get("severity") != severity)
            or (user is not None and record.get("user") != user)
            or (ip is not None and record.get("client_ip") != ip)
        ):
            continue
        when = record.get("time")
        if not isinstance(when, int | float):
            continue
        if (since is not None and when < since) or (until is not None and when >= until):
            continue
        found.append(record)
    return list(found)


@dataclass(slots=True)
class Report:
    """Counts over a time window; every list is ``(name, count)``, largest first.

    Attributes:
        since: the window's start, seconds since the epoch.
        entries: security events in the window.
        refusals_by_ip, refusals_by_user: handshake refusals and failed authentications.
        bans_by_ip, bans_by_user: bans added.
        anomaly_by_ip, anomaly_by_user: anomaly and abuse disconnects.
        refusals_by_reason: refusals by ``details["reason"]`` (``"(none)"`` if absent).
    """

    since: float
    entries: int = 0
    refusals_by_ip: list[tuple[str, int]] = field(default_factory=list)
    refusals_by_user: list[tuple[str, int]] = field(default_factory=list)
    bans_by_ip: list[tuple[str, int]] = field(default_factory=list)
    bans_by_user: list[tuple[str, int]] = field(default_factory=list)
    anomaly_by_ip: list[tuple[str, int]] = field(default_factory=list)
    anomaly_by_user: list[tuple[str, int]] = field(default_factory=list)
    refusals_by_reason: list[tuple[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (lists of ``[name, count]``)."""
        return {
            name: [list(pair) for pair in value] if isinstance(value, list) else value
            for name, value in ((n, getattr(self, n)) for n in self.__dataclass_fields__)
        }


def report(
    path: str | os.PathLike[str], since_s: float, now: float | None = None, top: int = _TOP
) -> Report:
    """Who was refused, banned and disconnected for abuse in the last ``since_s`` seconds."""
    start = (now if now is not None else _time.time()) - since_s
    counters: dict[str, Counter[str]] = {name: Counter() for name in _COUNTED}
    entries = 0
    for record in records(path):
        event = record.get("event")
        when = record.get("time")
        if event in _INTERNAL or not isinstance(when, int | float) or when < start:
            continue
        details = record.get("details")
        if (
            event == "auth_failed"
            and isinstance(details, dict)
            and details.get("stage") == "handshake"
        ):
            continue  # its handshake_refused entry counts the refusal once
        entries += 1
        group = (
            "refusals"
            if event in REFUSAL_EVENTS
            else "bans"
            if event in BAN_EVENTS
            else "anomaly"
            if event in ANOMALY_EVENTS
            else None
        )
        if group is None:
            continue
        if record.get("client_ip"):
            counters[f"{group}_by_ip"][str(record["client_ip"])] += 1
        if record.get("user"):
            counters[f"{group}_by_user"][str(record["user"])] += 1
        if group == "refusals":
            details = record.get("details")
            reason = details.get("reason") if isinstance(details, dict) else None
            counters["refusals_by_reason"][str(reason) if reason is not None else "(none)"] += 1
    result = Report(since=start, entries=entries)
    for name, counter in counters.items():
        setattr(result, name, sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top])
    return result


_COUNTED = (
    "refusals_by_ip",
    "refusals_by_user",
    "bans_by_ip",
    "bans_by_user",
    "anomaly_by_ip",
    "anomaly_by_user",
    "refusals_by_reason",
)
