"""The tamper-evident audit log.

Security events (:class:`AuditEvent`) go through processors (redaction, IP
privacy), then an HMAC hash chain with signed checkpoints, into a sink (SQLite
by default, JSON lines, stdout), written by :class:`AuditWriter` on its own
thread. :func:`verify_file` checks a file; :func:`show` and :func:`report` read
it; :func:`apply_retention` prunes it and keeps the rest verifiable. See each
module's docstring for the details, and :mod:`wsguard.audit.writer` for what a
checkpoint proves.

This package must not import :mod:`wsguard.config` (which imports it).
"""

from __future__ import annotations

from wsguard.audit.chain import AuditLogError, Chain
from wsguard.audit.config import AuditConfig
from wsguard.audit.events import (
    AuditEvent,
    DropEvent,
    IpMode,
    Processor,
    Severity,
    ip_privacy,
    redact,
)
from wsguard.audit.keys import parse_key_text, resolve_audit_key
from wsguard.audit.query import Report, report, show
from wsguard.audit.retention import apply_retention
from wsguard.audit.sinks import JsonlSink, Sink, SqliteSink, StdoutSink, open_sink
from wsguard.audit.verify import VerifyResult, verify_file
from wsguard.audit.writer import AuditWriter, default_processors

__all__ = [
    "AuditConfig",
    "AuditEvent",
    "AuditLogError",
    "AuditWriter",
    "Chain",
    "DropEvent",
    "IpMode",
    "JsonlSink",
    "Processor",
    "Report",
    "Severity",
    "Sink",
    "SqliteSink",
    "StdoutSink",
    "VerifyResult",
    "apply_retention",
    "default_processors",
    "ip_privacy",
    "open_sink",
    "parse_key_text",
    "redact",
    "report",
    "resolve_audit_key",
    "show",
    "verify_file",
]
