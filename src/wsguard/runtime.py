"""Everything a server process needs beside the guard, built from the config.

The CLI (and the gateway later) call :func:`build_runtime`: it makes the guard,
opens the audit log, loads the block list, builds the TLS context and refuses
to start in production when a required protection is off. The library's users
can call it too, or wire the pieces themselves.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wsguard.audit.chain import AuditLogError
from wsguard.audit.config import AuditConfig
from wsguard.audit.keys import resolve_audit_key
from wsguard.audit.sinks import open_sink
from wsguard.audit.writer import AuditWriter
from wsguard.config import GuardConfig, effective_config_hash
from wsguard.core.circuit import CircuitBreaker, CircuitConfig
from wsguard.core.clock import Clock, SystemClock
from wsguard.core.guard import Guard
from wsguard.exceptions import ConfigurationError
from wsguard.production import check_production
from wsguard.reputation import Reputation, ReputationProvider
from wsguard.tls import server_ssl_context

logger = logging.getLogger("wsguard")


@dataclass
class Runtime:
    """A guard with its audit writer, reputation and server options."""

    guard: Guard
    reputation: Reputation | None = None
    audit: AuditWriter | None = None
    serve_options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Flush and close the audit log (call once the server stopped)."""
        if self.audit is not None:
            self.audit.close()
            self.audit = None


def build_runtime(
    config: GuardConfig,
    *,
    clock: Clock | None = None,
    provider: ReputationProvider | None = None,
) -> Runtime:
    """Build the guard and its companions from ``config``.

    Raises:
        ConfigurationError: a bad TLS file, audit key, or a production problem.
    """
    clock = clock or SystemClock()
    serve_options: dict[str, Any] = {}
    if config.tls.enabled:
        assert config.tls.cert_file and config.tls.key_file  # help mypy
        context: ssl.SSLContext = server_ssl_context(config.tls.cert_file, config.tls.key_file)
        serve_options["ssl"] = context
    check_production(config, tls_enabled=config.tls.enabled, audit_enabled=config.audit.enabled)
    guard = Guard(config, clock=clock)
    runtime = Runtime(guard=guard, serve_options=serve_options)
    if config.audit.enabled:
        runtime.audit = _open_audit(
            config, config.audit, clock, runtime.notes, guard.metrics.audit_events_dropped_total.inc
        )
        guard.add_audit_sink(runtime.audit.emit)
    breaker = CircuitBreaker("reputation", CircuitConfig(name="reputation"), clock)
    if config.reputation.blocklist_file or provider is not None:
        runtime.reputation = Reputation(
            config.reputation, clock, provider=provider, breaker=breaker, logger=logger
        )
        runtime.reputation.load()
    guard.audit("config_loaded", config_hash=effective_config_hash(config), mode=config.mode)
    return runtime


def _open_audit(
    config: GuardConfig,
    audit: AuditConfig,
    clock: Clock,
    notes: list[str],
    on_drop: Callable[[], None],
) -> AuditWriter:
    key, note = resolve_audit_key(config.audit_key, audit.path, create=config.mode == "development")
    if note:
        notes.append(note)
    try:
        return AuditWriter(audit, key, clock, open_sink(audit, key), on_drop=on_drop)
    except AuditLogError as exc:
        raise ConfigurationError("audit.path", str(exc)) from None
