"""Rate limits: buckets, the sliding counter, backoff, per-connection and per-user budgets, caps."""

from __future__ import annotations

import math
from typing import Any

import pytest

from wsguard.core.ratelimit import (
    Backoff,
    ConnectionCounter,
    MessageLimiter,
    RateLimitConfig,
    SlidingCounter,
    TokenBucket,
    UserBuckets,
)
from wsguard.exceptions import ConfigurationError

NOW = 1_764_400_000.0


# Config.


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message_rate", 0),
        ("message_window", -1.0),
        ("user_rate", math.nan),
        ("ping_window", math.inf),
        ("message_burst", 0),
        ("handshake_attempts", 1.5),
        ("max_connections_total", True),
        ("violations_to_disconnect", 0),
        ("backoff_base", 0.0),
    ],
)
def test_config_refuses_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        RateLimitConfig(**{field: value})
    assert info.value.setting == f"rate_limits.{field}"


def test_config_refuses_backoff_max_below_base() -> None:
    with pytest.raises(ConfigurationError) as info:
        RateLimitConfig(backoff_base=10.0, backoff_max=5.0)
    assert info.value.setting == "rate_limits.backoff_max"


def test_config_defaults() -> None:
    config = RateLimitConfig()
    assert (config.message_rate, config.message_window, config.message_burst) == (100.0, 60.0, 20)
    assert (config.backoff_base, config.backoff_max, config.violations_to_disconnect) == (
        1.0,
        900.0,
        5,
    )


# TokenBucket.


def test_bucket_starts_full_and_empties_at_burst() -> None:
    bucket = TokenBucket(1.0, 3, NOW)
    assert [bucket.take(NOW) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(NOW) == pytest.approx(1.0)


def test_bucket_refills_at_rate_and_reports_the_wait() -> None:
    bucket = TokenBucket(2.0, 4, NOW)  # 2 tokens a second
    for _ in range(4):
        assert bucket.take(NOW) == 0.0
    assert bucket.take(NOW) == pytest.approx(0.5)
    assert bucket.take(NOW + 0.25) == pytest.approx(0.25)  # half a token so far
    assert bucket.take(NOW + 0.5) == 0.0
    assert bucket.take(NOW + 0.5) == pytest.approx(0.5)


def test_bucket_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(10.0, 5, NOW)
    for _ in range(5):
        bucket.take(NOW)
    later = NOW + 3600.0
    assert [bucket.take(later) for _ in range(6)] == [0.0] * 5 + [pytest.approx(0.1)]


def test_bucket_refusal_consumes_nothing() -> None:
    bucket = TokenBucket(1.0, 2, NOW)
    bucket.take(NOW, cost=2.0)
    for _ in range(100):
        assert bucket.take(NOW + 0.5) > 0
    assert bucket.take(NOW + 1.0) == 0.0  # exactly one second of refill, untouched


def test_bucket_cost_above_capacity_is_never_available() -> None:
    bucket = TokenBucket(1.0, 2, NOW)
    assert bucket.take(NOW, cost=3.0) == math.inf
    assert bucket.tokens(NOW) == 2.0


def test_bucket_clock_step_backwards_adds_nothing() -> None:
    bucket = TokenBucket(1.0, 1, NOW)
    assert bucket.take(NOW) == 0.0
    assert bucket.take(NOW - 100.0) > 0.0
    assert bucket.take(NOW + 1.0) == 0.0


def test_bucket_waiting_the_announced_time_is_enough() -> None:
    bucket = TokenBucket(100.0 / 60.0, 20, NOW)
    for _ in range(20):
        bucket.take(NOW)
    wait = bucket.take(NOW)
    assert wait > 0
    assert bucket.take(NOW + wait) == 0.0


def test_bucket_refund() -> None:
    bucket = TokenBucket(1.0, 2, NOW)
    bucket.take(NOW)
    bucket.refund()
    bucket.refund()  # capped at the capacity
    assert bucket.tokens(NOW) == 2.0


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (math.nan, 1), (1.0, 0)])
def test_bucket_refuses_bad_arguments(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, NOW)


# SlidingCounter.


def test_sliding_counter_allows_the_limit_then_refuses() -> None:
    counter = SlidingCounter(10, 10.0)
    start = 1000.0  # the start of a fixed window
    assert [counter.hit(start + i * 0.1) for i in range(10)] == [0.0] * 10
    wait = counter.hit(start + 1.0)
    assert wait > 0


def test_sliding_counter_wait_is_accurate_without_further_attempts() -> None:
    counter = SlidingCounter(10, 10.0)
    for _ in range(10):
        counter.hit(1000.0)
    wait = counter.hit(1000.0)  # the refused one is counted: 11 in this window
    # Next window: 11 * (1 - g) + 1 <= 10  =>  g >= 2/11.
    assert wait == pytest.approx(10.0 + 10.0 * 2 / 11)
    assert counter.hit(1000.0 + wait - 0.01) > 0
    assert counter.hit(1000.0 + wait + 1.0) == 0.0


def test_sliding_counter_flood_cannot_reset_or_earn_a_budget() -> None:
    counter = SlidingCounter(10, 10.0)
    allowed = 0
    t = 1000.0
    while t < 1100.0:  # 100 s of 100 attempts a second
        if counter.hit(t) == 0.0:
            allowed += 1
        t += 0.01
    # Only the first window's budget: a steady hammer never gets through again.
    assert allowed == 10


def test_sliding_counter_recovers_after_the_client_stops() -> None:
    counter = SlidingCounter(10, 10.0)
    for i in range(1000):
        counter.hit(1000.0 + i * 0.001)
    assert counter.hit(1005.0) > 0
    assert counter.is_idle(1025.0)
    assert counter.hit(1025.0) == 0.0


def test_sliding_counter_previous_window_fades_out() -> None:
    counter = SlidingCounter(4, 10.0)
    for _ in range(4):
        assert counter.hit(1000.0) == 0.0
    # Half way into the next window the previous four count as two.
    assert counter.count(1015.0) == pytest.approx(2.0)
    assert counter.hit(1015.0) == 0.0
    assert counter.hit(1015.0) == 0.0
    assert counter.hit(1015.0) > 0


def test_sliding_counter_limit_one() -> None:
    counter = SlidingCounter(1, 10.0)
    assert counter.hit(1000.0) == 0.0
    wait = counter.hit(1000.0)
    assert wait == pytest.approx(20.0)  # two counted; gone only by the window after next
    assert counter.hit(1000.0 + wait + 0.001) == 0.0


# Backoff.


def test_backoff_doubles_and_caps() -> None:
    config = RateLimitConfig(violations_to_disconnect=100, violation_window=10_000.0)
    backoff = Backoff(config)
    imposed = [backoff.violation(NOW + i)[0] for i in range(12)]
    assert imposed == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 900.0, 900.0]


def test_backoff_blocked_for_counts_down() -> None:
    backoff = Backoff(RateLimitConfig())
    assert backoff.blocked_for(NOW) == 0.0
    backoff.violation(NOW)
    backoff.violation(NOW + 1.0)  # 2 s from NOW + 1
    assert backoff.blocked_for(NOW + 2.0) == pytest.approx(1.0)
    assert backoff.blocked_for(NOW + 3.0) == 0.0


def test_backoff_violation_window_expiry_restarts_at_base() -> None:
    backoff = Backoff(RateLimitConfig(violation_window=60.0))
    assert backoff.violation(NOW)[0] == 1.0
    assert backoff.violation(NOW + 30.0)[0] == 2.0
    # The first has left the window, the second has not.
    assert backoff.violation(NOW + 61.0)[0] == 2.0
    assert backoff.violations(NOW + 61.0) == 2
    assert backoff.violation(NOW + 200.0)[0] == 1.0


def test_backoff_disconnect_after_n_violations() -> None:
    backoff = Backoff(RateLimitConfig(violations_to_disconnect=3))
    assert backoff.violation(NOW) == (1.0, False)
    assert backoff.violation(NOW + 1.0) == (2.0, False)
    assert backoff.violation(NOW + 3.0) == (4.0, True)


# MessageLimiter.


def _limiter(
    config: RateLimitConfig | None = None,
    user: TokenBucket | None = None,
    type_limits: dict[str, tuple[float, float, int]] | None = None,
) -> MessageLimiter:
    config = config or RateLimitConfig()
    user = user or UserBuckets(config).acquire("alice", NOW)
    return MessageLimiter(config, user, NOW, type_limits)


def test_flood_at_one_instant_lets_exactly_the_burst_through() -> None:
    limiter = _limiter()
    results = [limiter.check(NOW) for _ in range(1000)]
    assert sum(1 for r in results if r == 0.0) == 20
    assert results[:20] == [0.0] * 20
    assert all(r > 0 for r in results[20:])


def test_flood_over_time_lets_burst_plus_refill_through() -> None:
    # 60 per 60 s = one token a second; backoff tiny so that it hides no refill.
    config = RateLimitConfig(
        message_rate=60.0,
        message_burst=20,
        user_rate=10_000.0,
        user_burst=10_000,
        backoff_base=1e-6,
        backoff_max=1e-6,
        violations_to_disconnect=1_000_000,
    )
    limiter = _limiter(config)
    allowed = 0
    for second in range(10):
        for _ in range(100):
            if limiter.check(NOW + second) == 0.0:
                allowed += 1
    assert allowed == 20 + 9  # the burst, then one per elapsed second


def test_refusal_reports_retry_after_and_backs_off() -> None:
    limiter = _limiter()
    for _ in range(20):
        limiter.check(NOW)
    first = limiter.check(NOW)
    assert first == pytest.approx(1.0)  # the 1 s backoff is longer than the 0.6 s refill
    # During the backoff: refused at once, no new violation (no doubling).
    assert limiter.check(NOW + 0.5) == pytest.approx(0.5)
    assert limiter.blocked_for(NOW + 0.5) == pytest.approx(0.5)
    # After it: one token has refilled (0.6 s), the next refusal doubles.
    assert limiter.check(NOW + 1.0) == 0.0
    assert limiter.check(NOW + 1.0) == pytest.approx(2.0)


def test_repeated_violations_disconnect() -> None:
    limiter = _limiter()
    t = NOW
    violations_at = []
    while not limiter.should_disconnect:
        assert limiter.blocked_for(t) == 0.0
        while limiter.check(t) == 0.0:  # spend the burst, then whatever refilled
            pass
        violations_at.append(t - NOW)
        t += limiter.blocked_for(t)  # a client that honours the retry-after, then floods
    # The fifth violation inside a minute, after 1 + 2 + 4 + 8 s of backoff.
    assert violations_at == [0.0, 1.0, 3.0, 7.0, 15.0]


def test_disconnect_needs_violations_inside_the_window() -> None:
    config = RateLimitConfig(message_rate=60.0, message_burst=1, violation_window=60.0)
    limiter = _limiter(config)
    t = NOW
    for _ in range(20):  # one violation every 2 minutes: never five inside a minute
        assert limiter.check(t) == 0.0
        assert limiter.check(t) > 0
        t += 120.0
    assert not limiter.should_disconnect


def test_user_bucket_is_shared_by_tabs() -> None:
    config = RateLimitConfig(message_burst=20, user_burst=30)
    users = UserBuckets(config)
    tabs = [MessageLimiter(config, users.acquire("alice", NOW), NOW) for _ in range(5)]
    assert len(users) == 1
    allowed = sum(1 for tab in tabs for _ in range(20) if tab.check(NOW) == 0.0)
    assert allowed == 30  # not 5 * 20


def test_user_refusal_gives_the_connection_token_back() -> None:
    config = RateLimitConfig(message_burst=20, user_burst=5)
    users = UserBuckets(config)
    first = MessageLimiter(config, users.acquire("alice", NOW), NOW)
    for _ in range(5):
        assert first.check(NOW) == 0.0
    second = MessageLimiter(config, users.acquire("alice", NOW), NOW)
    assert second.check(NOW) > 0
    # Another user's connection with a fresh bucket is unaffected.
    other = MessageLimiter(config, users.acquire("bob", NOW), NOW)
    assert other.check(NOW) == 0.0
    assert len(users) == 2


def test_user_buckets_empty_after_release() -> None:
    users = UserBuckets(RateLimitConfig())
    a1 = users.acquire("alice", NOW)
    a2 = users.acquire("alice", NOW)
    users.acquire("bob", NOW)
    assert a1 is a2
    assert len(users) == 2
    users.release("alice")
    assert len(users) == 2
    assert users.acquire("alice", NOW) is a1  # still held by one connection
    users.release("alice")
    users.release("alice")
    users.release("bob")
    assert len(users) == 0
    users.release("nobody")  # ignored
    assert len(users) == 0
    assert users.acquire("alice", NOW) is not a1


def test_per_type_limits() -> None:
    limiter = _limiter(type_limits={"file_upload": (5, 60, 5)})
    assert [limiter.check_type("file_upload", NOW) for _ in range(5)] == [0.0] * 5
    retry = limiter.check_type("file_upload", NOW)
    assert retry == pytest.approx(12.0)  # one upload per 12 s
    # Types without a budget, and the connection budget, are not affected by the type's.
    assert limiter.check_type("chat", NOW) == 0.0
    assert limiter.check_type("file_upload", NOW + 12.0) == 0.0


def test_per_type_refusal_counts_a_violation() -> None:
    config = RateLimitConfig(violations_to_disconnect=2)
    limiter = _limiter(config, type_limits={"file_upload": (1, 60, 1)})
    assert limiter.check_type("file_upload", NOW) == 0.0
    assert limiter.check_type("file_upload", NOW) > 0
    assert limiter.blocked_for(NOW) == pytest.approx(1.0)
    assert limiter.check(NOW + 0.5) == pytest.approx(0.5)
    assert limiter.check_type("file_upload", NOW + 2.0) > 0
    assert limiter.should_disconnect


def test_pings_have_their_own_budget() -> None:
    limiter = _limiter()
    assert [limiter.check_ping(NOW) for _ in range(5)] == [0.0] * 5
    assert limiter.check_ping(NOW) == pytest.approx(2.0)
    assert limiter.check(NOW) == 0.0  # messages are not affected
    assert limiter.check_ping(NOW + 2.0) == 0.0


def test_first_ping_long_after_the_handshake_finds_the_full_budget() -> None:
    """The ping budget is made at the first ping, full, as if made at the handshake."""
    limiter = _limiter()
    later = NOW + 3600.0
    assert [limiter.check_ping(later) for _ in range(5)] == [0.0] * 5
    assert limiter.check_ping(later) == pytest.approx(2.0)


def test_backoff_state_starts_at_the_first_violation() -> None:
    """Before any refusal there is no backoff; the first one starts it at the base."""
    config = RateLimitConfig(message_burst=1, message_rate=1.0, message_window=60.0)
    limiter = _limiter(config)
    assert limiter.blocked_for(NOW) == 0.0
    assert limiter.check(NOW) == 0.0
    assert limiter.blocked_for(NOW) == 0.0
    retry = limiter.check(NOW)  # the first violation
    assert retry == pytest.approx(60.0)  # the bucket's wait, longer than the base backoff
    assert limiter.blocked_for(NOW) == pytest.approx(config.backoff_base)


# ConnectionCounter.


def test_connection_counter_per_ip_cap_and_cleanup() -> None:
    counter = ConnectionCounter(per_ip=2, total=10)
    assert counter.try_open("1.2.3.4") == 0
    assert counter.try_open("1.2.3.4") == 0
    assert counter.try_open("1.2.3.4") == 429
    assert counter.try_open("5.6.7.8") == 0
    assert (counter.count("1.2.3.4"), counter.total, len(counter)) == (2, 3, 2)
    counter.close("1.2.3.4")
    assert counter.try_open("1.2.3.4") == 0
    for _ in range(2):
        counter.close("1.2.3.4")
    counter.close("5.6.7.8")
    assert (counter.count("1.2.3.4"), counter.total, len(counter)) == (0, 0, 0)
    counter.close("1.2.3.4")  # unknown: ignored, the total never goes negative
    assert counter.total == 0


def test_connection_counter_total_cap() -> None:
    counter = ConnectionCounter(per_ip=5, total=3)
    assert [counter.try_open(f"10.0.0.{i}") for i in range(4)] == [0, 0, 0, 503]
    counter.close("10.0.0.0")
    assert counter.try_open("10.0.0.3") == 0


def test_connection_counter_exempt_skips_only_the_per_ip_cap() -> None:
    counter = ConnectionCounter(per_ip=1, total=3)
    assert [counter.try_open("10.9.9.9", exempt=True) for _ in range(4)] == [0, 0, 0, 503]
    assert counter.count("10.9.9.9") == 3
