"""Metrics: a private registry, the text format, and a bounded label cardinality."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from wsguard.metrics import OVERFLOW_LABEL, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(metrics: Metrics, metric: str, /, **labels: str) -> float | None:
    return samples(metrics).get((metric, frozenset(labels.items())))


def test_two_instances_do_not_collide_and_skip_the_global_registry() -> None:
    a, b = Metrics(), Metrics()
    a.connections_total.inc()
    assert value(a, "wsguard_connections_total") == 1
    assert value(b, "wsguard_connections_total") == 0
    assert a.registry is not REGISTRY
    assert REGISTRY.get_sample_value("wsguard_connections_total") is None


def test_an_explicit_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.bans_active.set(4)
    assert registry.get_sample_value("wsguard_bans_active") == 4


def test_every_metric_renders_with_its_value() -> None:
    m = Metrics()
    m.connections_open.inc(3)
    m.connections_open.dec()
    m.connections_total.inc(7)
    m.handshake_refused("origin")
    m.handshake_refused("origin")
    m.handshake_refusals_total.labels(reason="auth").inc()
    m.message("chat", "ok")
    m.messages_total.labels(type="unknown", outcome="rejected").inc()
    m.rate_limit_hit("message")
    m.ban_added("ip")
    m.bans_total.labels(kind="user").inc()
    m.bans_active.set(2)
    m.anomaly_disconnects_total.inc()
    m.sessions_users_at_limit.set(5)
    m.audit_events_dropped_total.inc(9)
    m.reputation_provider_failures_total.inc()
    m.set_circuit_state("reputation", "open")
    m.set_circuit_state("redis", "half_open")
    m.handshake_seconds.observe(0.003)
    m.message_pipeline_seconds.observe(3e-6)
    m.message_pipeline_seconds.observe(0.02)  # beyond the last bucket

    s = samples(m)

    def get(metric: str, /, **labels: str) -> float:
        return s[(metric, frozenset(labels.items()))]

    assert get("wsguard_connections_open") == 2
    assert get("wsguard_connections_total") == 7
    assert get("wsguard_handshake_refusals_total", reason="origin") == 2
    assert get("wsguard_handshake_refusals_total", reason="auth") == 1
    assert get("wsguard_messages_total", type="chat", outcome="ok") == 1
    assert get("wsguard_messages_total", type="unknown", outcome="rejected") == 1
    assert get("wsguard_rate_limit_hits_total", scope="message") == 1
    assert get("wsguard_bans_total", kind="ip") == 1
    assert get("wsguard_bans_total", kind="user") == 1
    assert get("wsguard_bans_active") == 2
    assert get("wsguard_anomaly_disconnects_total") == 1
    assert get("wsguard_sessions_users_at_limit") == 5
    assert get("wsguard_audit_events_dropped_total") == 9
    assert get("wsguard_reputation_provider_failures_total") == 1
    assert get("wsguard_circuit_state", name="reputation") == 2
    assert get("wsguard_circuit_state", name="redis") == 1
    assert get("wsguard_handshake_seconds_count") == 1
    assert get("wsguard_handshake_seconds_bucket", le="0.0025") == 0
    assert get("wsguard_handshake_seconds_bucket", le="0.005") == 1
    assert get("wsguard_message_pipeline_seconds_bucket", le="1e-06") == 0
    assert get("wsguard_message_pipeline_seconds_bucket", le="5e-06") == 1
    assert get("wsguard_message_pipeline_seconds_bucket", le="0.01") == 1
    assert get("wsguard_message_pipeline_seconds_bucket", le="+Inf") == 2
    assert all(name.startswith("wsguard_") for name, _ in s)


def test_pipeline_buckets_span_a_microsecond_to_ten_milliseconds() -> None:
    m = Metrics()
    bounds = sorted(
        float(dict(labels)["le"])
        for name, labels in samples(m)
        if name == "wsguard_message_pipeline_seconds_bucket"
    )
    assert bounds[0] == 1e-6
    assert bounds[-2] == 1e-2 and bounds[-1] == float("inf")


def test_circuit_state_rejects_unknown_states() -> None:
    with pytest.raises(ValueError):
        Metrics().set_circuit_state("x", "broken")  # type: ignore[arg-type]


def test_cardinality_cap_maps_overflow_to_other() -> None:
    m = Metrics(max_label_values=3)
    for i in range(1000):
        m.message(f"attacker-{i}", "rejected")
    s = samples(m)
    types = {dict(labels)["type"] for name, labels in s if name == "wsguard_messages_total"}
    assert types == {"attacker-0", "attacker-1", "attacker-2", OVERFLOW_LABEL}
    assert value(m, "wsguard_messages_total", type=OVERFLOW_LABEL, outcome="rejected") == 997
    # Values already seen keep counting under their own name.
    m.message("attacker-1", "rejected")
    assert value(m, "wsguard_messages_total", type="attacker-1", outcome="rejected") == 2


def test_default_cap_is_200_per_label() -> None:
    m = Metrics()
    for i in range(500):
        m.handshake_refused(f"r{i}")
    reasons = {
        dict(labels)["reason"]
        for name, labels in samples(m)
        if name == "wsguard_handshake_refusals_total"
    }
    assert len(reasons) == 201 and OVERFLOW_LABEL in reasons


def test_caps_are_per_metric() -> None:
    m = Metrics(max_label_values=1)
    m.handshake_refused("origin")
    m.rate_limit_hit("ip")  # a different metric has its own budget
    assert value(m, "wsguard_rate_limit_hits_total", scope="ip") == 1


def test_allow_set_and_precreated_zeros() -> None:
    m = Metrics(
        allowed_label_values={
            "type": ["chat", "unknown"],
            "outcome": ["ok", "rejected"],
            "reason": ["origin", "auth"],
        }
    )
    assert value(m, "wsguard_messages_total", type="chat", outcome="rejected") == 0
    assert value(m, "wsguard_handshake_refusals_total", reason="auth") == 0
    m.message("<script>", "ok")
    m.message("chat", "weird")
    m.handshake_refused("made-up")
    assert value(m, "wsguard_messages_total", type=OVERFLOW_LABEL, outcome="ok") == 1
    assert value(m, "wsguard_messages_total", type="chat", outcome=OVERFLOW_LABEL) == 1
    assert value(m, "wsguard_handshake_refusals_total", reason=OVERFLOW_LABEL) == 1


@pytest.mark.parametrize("bad", ["", "x" * 65])
def test_empty_and_long_values_are_other(bad: str) -> None:
    m = Metrics()
    m.rate_limit_hit(bad)
    assert value(m, "wsguard_rate_limit_hits_total", scope=OVERFLOW_LABEL) == 1


def test_guarded_labels_require_the_right_names() -> None:
    with pytest.raises(ValueError):
        Metrics().bans_total.labels(reason="ip")


def test_fast_histogram_exposition_matches_prometheus_semantics() -> None:
    """Buckets are cumulative with le bounds; sum and count add up; the parser reads it."""
    from prometheus_client.parser import text_string_to_metric_families

    from wsguard.metrics import Metrics

    metrics = Metrics()
    for value in (0.000001, 0.000004, 0.00002, 5.0):
        metrics.message_pipeline_seconds.observe(value)
    body, _ = metrics.render()
    family = next(
        f
        for f in text_string_to_metric_families(body.decode())
        if f.name == "wsguard_message_pipeline_seconds"
    )
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("wsguard_message_pipeline_seconds_count", None)] == 4
    assert samples[("wsguard_message_pipeline_seconds_bucket", "+Inf")] == 4
    assert abs(samples[("wsguard_message_pipeline_seconds_sum", None)] - 5.000025) < 1e-9
    finite = sorted(
        (float(le), v)
        for (name, le), v in samples.items()
        if name.endswith("_bucket") and le != "+Inf"
    )
    assert all(a[1] <= b[1] for a, b in zip(finite, finite[1:], strict=False))  # cumulative
    assert finite[-1][1] == 3  # 5 s is above every finite bound


def test_message_counts_accumulate_across_scrapes_and_registries() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    for _ in range(3):
        m.message("chat", "delivered")
    assert value(m, "wsguard_messages_total", type="chat", outcome="delivered") == 3
    m.message("chat", "delivered")
    m.message("chat", "rejected")
    # Any scrape of the registry sees them, not only render().
    assert (
        registry.get_sample_value(
            "wsguard_messages_total", {"type": "chat", "outcome": "delivered"}
        )
        == 4
    )
    assert value(m, "wsguard_messages_total", type="chat", outcome="rejected") == 1
    assert value(m, "wsguard_messages_total", type="chat", outcome="delivered") == 4


def test_live_state_gauges_are_read_from_the_guard_when_scraped() -> None:
    """Open connections and users at the session limit are set at scrape time, not
    per connection: each scrape reports the registry as it is then."""
    from wsguard.config import GuardConfig, JwtConfig
    from wsguard.core.auth import issue_token
    from wsguard.core.clock import FakeClock
    from wsguard.core.decisions import Accept, HandshakeRequest
    from wsguard.core.guard import Guard
    from wsguard.core.registry import SessionConfig

    clock = FakeClock(1_764_400_000.0)
    jwt = JwtConfig(secret="metrics-secret-0123456789abcdef0123456789")
    guard = Guard(
        GuardConfig(jwt=jwt, sessions=SessionConfig(max_sessions_per_user=2)), clock=clock
    )

    def opened(sub: str) -> Any:
        token = issue_token(jwt, sub, ["user"], 600, clock.now())
        headers = (("authorization", f"Bearer {token}"),)
        decision = guard.handshake(HandshakeRequest("127.0.0.1", "/ws", "", headers))
        assert isinstance(decision, Accept)
        assert guard.open_session(decision.policy, object())
        return decision.policy

    policies = [opened("alice"), opened("alice"), opened("bob")]
    assert value(guard.metrics, "wsguard_connections_open") == 3
    assert value(guard.metrics, "wsguard_sessions_users_at_limit") == 1
    guard.close_session(policies[0])
    assert value(guard.metrics, "wsguard_connections_open") == 2
    assert value(guard.metrics, "wsguard_sessions_users_at_limit") == 0
