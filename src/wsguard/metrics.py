"""Prometheus metrics for ``GET /metrics``; no I/O, just a registry.

Each :class:`Metrics` owns its own :class:`prometheus_client.CollectorRegistry`
(never the process-global one), so several servers and tests in one process do
not collide.

Every metric is a public attribute named like its series without the
``wsguard_`` prefix. Unlabelled ones are plain prometheus-client objects
(``inc()``, ``dec()``, ``set()``, ``observe()``). Labelled ones are wrapped: their
``labels(**values)`` passes every value through a cardinality guard before
returning the prometheus-client child (``metrics.bans_total.labels(kind="ip").inc()``),
and shortcut methods (:meth:`Metrics.handshake_refused`, :meth:`Metrics.message`,
...) do the same. A client must never be able to mint label values.

Callers should pass values from fixed sets anyway: for ``type``, only registered
message type names or ``"unknown"``; for ``reason``, the fixed refusal reasons,
never a client string. The guard is the backstop:

* when an allow set is given for a label name, any other value becomes ``"other"``;
* otherwise each (metric, label) pair keeps at most ``max_label_values`` distinct
  values; later new values become ``"other"``;
* a value that is not a non-empty string of at most ``MAX_LABEL_VALUE_LENGTH``
  characters is always ``"other"``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Final, Generic, Literal, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily, Metric

__all__ = [
    "CIRCUIT_STATES",
    "HANDSHAKE_BUCKETS",
    "MAX_LABEL_VALUE_LENGTH",
    "MESSAGE_PIPELINE_BUCKETS",
    "OVERFLOW_LABEL",
    "CircuitState",
    "GuardedFamily",
    "Metrics",
]

OVERFLOW_LABEL: Final = "other"
MAX_LABEL_VALUE_LENGTH: Final = 64
DEFAULT_MAX_LABEL_VALUES: Final = 200

CircuitState = Literal["closed", "half_open", "open"]
CIRCUIT_STATES: Final[Mapping[str, int]] = {"closed": 0, "half_open": 1, "open": 2}

# The per-message pipeline is pure CPU work: microseconds normally, milliseconds
# when something is wrong.
MESSAGE_PIPELINE_BUCKETS: Final = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
)  # fmt: skip
# The handshake may wait on a reputation provider or a shared store.
HANDSHAKE_BUCKETS: Final = (
    5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class _LabelGuard:
    """Maps label values onto a bounded set, per metric and label name."""

    def __init__(self, allowed: Mapping[str, Iterable[str]], max_values: int) -> None:
        self._allowed = {name: frozenset(values) for name, values in allowed.items()}
        self._max = max_values
        self._seen: dict[tuple[str, str], set[str]] = {}

    def allowed_for(self, label: str) -> frozenset[str] | None:
        return self._allowed.get(label)

    def __call__(self, metric: str, label: str, value: object) -> str:
        if (
            not isinstance(value, str)
            or not value
            or len(value) > MAX_LABEL_VALUE_LENGTH
            or value == OVERFLOW_LABEL
        ):
            return OVERFLOW_LABEL
        allowed = self._allowed.get(label)
        if allowed is not None:
            return value if value in allowed else OVERFLOW_LABEL
        seen = self._seen.setdefault((metric, label), set())
        if value in seen:
            return value
        if len(seen) >= self._max:
            return OVERFLOW_LABEL
        seen.add(value)
        return value


_M = TypeVar("_M", Counter, Gauge)


class GuardedFamily(Generic[_M]):
    """A labelled metric whose label values pass through the cardinality guard.

    Args:
        metric: the prometheus-client metric (the parent, with label names).
        key: the guard's name for it.
        guard: the shared guard.
        label_names: the metric's label names, in order.
    """

    def __init__(
        self, metric: _M, key: str, guard: _LabelGuard, label_names: tuple[str, ...]
    ) -> None:
        self._metric: _M = metric
        self._key = key
        self._guard = guard
        self._names = label_names

    def labels(self, **values: str) -> _M:
        """The child for these label values, each mapped onto the bounded set.

        Raises:
            ValueError: the label names do not match the metric's.
        """
        if set(values) != set(self._names):
            raise ValueError(f"expected labels {self._names}, got {tuple(values)}")
        child: _M = self._metric.labels(
            **{name: self._guard(self._key, name, values[name]) for name in self._names}
        )
        return child


class Metrics:
    """wsguard's metrics, all named ``wsguard_*``.

    Args:
        registry: where to register; a new private :class:`CollectorRegistry`
            when ``None``.
        allowed_label_values: per label name (``type``, ``outcome``, ``reason``,
            ``scope``, ``kind``, ``name``), the only values it may take; others
            become ``"other"``. Allowed values are pre-created at zero so that a
            scrape shows them before they first happen.
        max_label_values: for label names without an allow set, the distinct
            values kept per metric before new ones become ``"other"``.

    Attributes:
        registry: the registry to scrape.
        connections_open: gauge of open guarded connections.
        connections_total: counter of accepted connections.
        handshake_refusals_total: refused handshakes, label ``reason``.
        messages_total: client messages, labels ``type`` and ``outcome``.
        rate_limit_hits_total: rate limit hits, label ``scope``.
        bans_total: bans imposed, label ``kind``.
        bans_active: gauge of bans in force.
        anomaly_disconnects_total: connections closed for anomalies.
        sessions_users_at_limit: gauge of users holding the maximum sessions.
        audit_events_dropped_total: audit events dropped (full queue or sink down).
        reputation_provider_failures_total: failed reputation look-ups.
        circuit_state: gauge per breaker, label ``name``: 0 closed, 1 half-open, 2 open.
        handshake_seconds: histogram of handshake durations.
        message_pipeline_seconds: histogram of per-message pipeline durations.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        allowed_label_values: Mapping[str, Iterable[str]] | None = None,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    ) -> None:
        if max_label_values < 1:
            raise ValueError("max_label_values must be >= 1")
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._guard = _LabelGuard(allowed_label_values or {}, max_label_values)
        r = self.registry
        self._message_counts: dict[tuple[str, str], int] = {}
        self._message_children: dict[tuple[str, str], Counter] = {}
        self._scrape_hooks: list[Callable[[], None]] = []
        # Registered before every metric: a scrape first moves the pending
        # message counts into messages_total and runs the hooks that set gauges.
        r.register(_BeforeScrape(self._before_scrape))

        def counter(name: str, doc: str, *labels: str) -> GuardedFamily[Counter]:
            metric = Counter(f"wsguard_{name}", doc, labels, registry=r)
            return GuardedFamily(metric, name, self._guard, labels)

        self.connections_open = Gauge(
            "wsguard_connections_open", "Open guarded connections.", registry=r
        )
        self.connections_total = Counter(
            "wsguard_connections_total", "Connections accepted after the handshake.", registry=r
        )
        self.handshake_refusals_total = counter(
            "handshake_refusals_total", "Handshakes refused, by reason.", "reason"
        )
        self.messages_total = counter(
            "messages_total", "Client messages, by registered type and outcome.", "type", "outcome"
        )
        self.rate_limit_hits_total = counter(
            "rate_limit_hits_total", "Rate limit hits, by scope.", "scope"
        )
        self.bans_total = counter("bans_total", "Bans imposed, by kind.", "kind")
        self.bans_active = Gauge("wsguard_bans_active", "Bans in force.", registry=r)
        self.anomaly_disconnects_total = Counter(
            "wsguard_anomaly_disconnects_total", "Connections closed for anomalies.", registry=r
        )
        self.sessions_users_at_limit = Gauge(
            "wsguard_sessions_users_at_limit",
            "Users holding the maximum number of sessions.",
            registry=r,
        )
        self.audit_events_dropped_total = Counter(
            "wsguard_audit_events_dropped_total", "Audit events dropped.", registry=r
        )
        self.reputation_provider_failures_total = Counter(
            "wsguard_reputation_provider_failures_total",
            "Failed IP reputation look-ups.",
            registry=r,
        )
        self.circuit_state = GuardedFamily(
            Gauge(
                "wsguard_circuit_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                ["name"],
                registry=r,
            ),
            "circuit_state",
            self._guard,
            ("name",),
        )
        self.handshake_seconds = FastHistogram(
            "wsguard_handshake_seconds", "Handshake duration in seconds.", HANDSHAKE_BUCKETS, r
        )
        self.message_pipeline_seconds = FastHistogram(
            "wsguard_message_pipeline_seconds",
            "Per-message pipeline duration in seconds.",
            MESSAGE_PIPELINE_BUCKETS,
            r,
        )
        self._precreate()

    # -- shortcuts for the labelled metrics -------------------------------------

    def handshake_refused(self, reason: str) -> None:
        """Count a refused handshake; ``reason`` from a fixed set (e.g. ``"origin"``)."""
        self.handshake_refusals_total.labels(reason=reason).inc()

    def message(self, type_: str, outcome: str) -> None:
        """Count a client message.

        Called once per message, so it only adds to a plain dict; the counts move
        into ``messages_total`` when the registry is scraped. Call it from the
        event loop that serves the connections (wsguard's ``/metrics`` scrapes
        there too).

        Args:
            type_: a registered message type name, or ``"unknown"``; never the
                raw ``type`` of an unregistered message.
            outcome: e.g. ``"ok"``, ``"rejected"``, ``"error"``.
        """
        counts = self._message_counts
        key = (type_, outcome)
        counts[key] = counts.get(key, 0) + 1

    def on_scrape(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before every scrape, e.g. to set a gauge from live state.

        For values that change on every connection: setting them when scraped
        costs nothing per connection.
        """
        self._scrape_hooks.append(hook)

    def _before_scrape(self) -> None:
        self._flush_messages()
        for hook in self._scrape_hooks:
            hook()

    def _flush_messages(self) -> None:
        counts, self._message_counts = self._message_counts, {}
        for (type_, outcome), count in counts.items():
            child = self._message_children.get((type_, outcome))
            if child is None:  # label lookups cost more than the count itself: cache them
                child = self.messages_total.labels(type=type_, outcome=outcome)
                if len(self._message_children) < 4 * DEFAULT_MAX_LABEL_VALUES:
                    self._message_children[(type_, outcome)] = child
            child.inc(count)

    def rate_limit_hit(self, scope: str) -> None:
        """Count a rate limit hit; ``scope`` e.g. ``"handshake"``, ``"user"``, ``"message"``."""
        self.rate_limit_hits_total.labels(scope=scope).inc()

    def ban_added(self, kind: str) -> None:
        """Count a ban; ``kind`` e.g. ``"ip"`` or ``"user"``. Keep :attr:`bans_active` apart."""
        self.bans_total.labels(kind=kind).inc()

    def set_circuit_state(self, name: str, state: CircuitState) -> None:
        """Record a circuit breaker's state (0 closed, 1 half-open, 2 open).

        Raises:
            ValueError: ``state`` is not one of ``closed``, ``half_open``, ``open``.
        """
        try:
            value = CIRCUIT_STATES[state]
        except KeyError:
            raise ValueError(f"unknown circuit state {state!r}") from None
        self.circuit_state.labels(name=name).set(value)

    # -- output ----------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its ``Content-Type``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _precreate(self) -> None:
        # Pre-created children make a series visible at 0 before its first event.
        for label, family in (
            ("reason", self.handshake_refusals_total),
            ("scope", self.rate_limit_hits_total),
            ("kind", self.bans_total),
        ):
            for value in sorted(self._guard.allowed_for(label) or ()):
                family.labels(**{label: value})
        types = self._guard.allowed_for("type") or frozenset()
        outcomes = self._guard.allowed_for("outcome") or frozenset()
        for type_ in sorted(types):
            for outcome in sorted(outcomes):
                self.messages_total.labels(type=type_, outcome=outcome)


class _BeforeScrape:
    """A collector with no metrics of its own: runs ``action`` when scraped."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self._action()
        return iter(())


class FastHistogram:
    """A histogram for the per-message path: ``observe`` is a bisect and two adds.

    ``prometheus_client.Histogram.observe`` takes a lock and walks its buckets,
    which costs more than a whole guarded message should. This one keeps plain
    counts, is meant for one event-loop thread, and is exposed by a custom
    collector in the standard histogram format.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = sorted(b for b in buckets if b != float("inf"))
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(self._bounds, self._counts, strict=False):
            cumulative += count
            buckets.append((repr(float(bound)), cumulative))
        buckets.append(("+Inf", cumulative + self._counts[-1]))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=self._sum
        )
