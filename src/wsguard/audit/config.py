"""The ``[audit]`` configuration section.

This module must not import :mod:`wsguard.config`, which imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from wsguard.audit.events import IpMode
from wsguard.exceptions import ConfigurationError

__all__ = ["AuditConfig", "SinkKind"]

SinkKind = Literal["sqlite", "jsonl", "stdout"]


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """The tamper-evident audit log.

    Attributes:
        enabled: write the audit log at all (required in production).
        sink: ``"sqlite"`` (the default, WAL), ``"jsonl"`` or ``"stdout"``.
        path: the log file for the sqlite and jsonl sinks.
        ip_mode: ``"full"``, ``"truncate"`` (IPv4 /24, IPv6 /48) or ``"hash"``
            (keyed HMAC, 16 hex characters).
        queue_size: events waiting for the writer thread; beyond it they are dropped.
        checkpoint_every: write a signed checkpoint after this many entries.
        checkpoint_interval: ... or after this many seconds with unsealed entries.
        retention_days: delete entries older than this (``None``: keep them).
        retention_max_entries: keep at most about this many entries (``None``: all).
    """

    enabled: bool = True
    sink: SinkKind = "sqlite"
    path: str = "wsguard-audit.db"
    ip_mode: IpMode = "full"
    queue_size: int = 10_000
    checkpoint_every: int = 100
    checkpoint_interval: float = 10.0
    retention_days: float | None = None
    retention_max_entries: int | None = None

    def __post_init__(self) -> None:
        if self.sink not in ("sqlite", "jsonl", "stdout"):
            raise ConfigurationError("audit.sink", "must be 'sqlite', 'jsonl' or 'stdout'")
        if self.ip_mode not in ("full", "truncate", "hash"):
            raise ConfigurationError("audit.ip_mode", "must be 'full', 'truncate' or 'hash'")
        if self.sink != "stdout" and not self.path:
            raise ConfigurationError("audit.path", "must not be empty")
        for name in ("queue_size", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"audit.{name}", "must be a positive integer")
        if not _positive(self.checkpoint_interval):
            raise ConfigurationError("audit.checkpoint_interval", "must be a positive number")
        if self.retention_days is not None and not _positive(self.retention_days):
            raise ConfigurationError("audit.retention_days", "must be a positive number")
        entries = self.retention_max_entries
        if entries is not None and (
            isinstance(entries, bool) or not isinstance(entries, int) or entries < 1
        ):
            raise ConfigurationError("audit.retention_max_entries", "must be a positive integer")


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
