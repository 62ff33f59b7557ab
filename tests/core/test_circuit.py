"""Tests for the circuit breaker state machine, driven by a fake clock."""

from __future__ import annotations

import pytest

from wsguard.core.circuit import CircuitBreaker, CircuitConfig, CircuitState
from wsguard.core.clock import FakeClock
from wsguard.exceptions import ConfigurationError


def make(
    failure_threshold: int = 3, reset_timeout: float = 10.0, half_open_max_calls: int = 1
) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    config = CircuitConfig(
        failure_threshold=failure_threshold,
        reset_timeout=reset_timeout,
        half_open_max_calls=half_open_max_calls,
    )
    return CircuitBreaker("test", config, clock), clock


def trip(breaker: CircuitBreaker, failures: int) -> None:
    for _ in range(failures):
        assert breaker.allow()
        breaker.record_failure()


def test_starts_closed_and_allows() -> None:
    """A new breaker lets calls through."""
    breaker, _ = make()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()
    assert breaker.failures == 0
    assert breaker.opened_count == 0


def test_opens_after_threshold_consecutive_failures() -> None:
    """failure_threshold consecutive failures open it; then calls are refused."""
    breaker, _ = make(failure_threshold=3)
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failures == 2
    trip(breaker, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.opened_count == 1
    assert not breaker.allow()


def test_a_success_resets_the_count() -> None:
    """Failures must be consecutive: a success in between starts over."""
    breaker, _ = make(failure_threshold=3)
    trip(breaker, 2)
    breaker.record_success()
    assert breaker.failures == 0
    trip(breaker, 2)
    assert breaker.state is CircuitState.CLOSED


def test_stays_open_until_the_reset_timeout() -> None:
    """Open refuses until reset_timeout has passed, then allows one trial."""
    breaker, clock = make(failure_threshold=1, reset_timeout=10)
    trip(breaker, 1)
    clock.advance(9.9)
    assert not breaker.allow()
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.1)
    assert breaker.allow()
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()  # only half_open_max_calls trials


def test_half_open_success_closes() -> None:
    """A successful trial closes the circuit and clears the failures."""
    breaker, clock = make(failure_threshold=2)
    trip(breaker, 2)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failures == 0
    assert breaker.allow() and breaker.allow()


def test_half_open_failure_opens_again() -> None:
    """A failed trial reopens at once, for a full reset_timeout."""
    breaker, clock = make(failure_threshold=2, reset_timeout=10)
    trip(breaker, 2)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is CircuitState.OPEN
    assert breaker.opened_count == 2
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_half_open_max_calls() -> None:
    """Several trial calls may be allowed while half-open."""
    breaker, clock = make(failure_threshold=1, half_open_max_calls=3)
    trip(breaker, 1)
    clock.advance(10)
    assert [breaker.allow() for _ in range(4)] == [True, True, True, False]


def test_half_open_without_reports_retries_after_the_timeout() -> None:
    """A trial that never reports back (cancelled) does not wedge the breaker."""
    breaker, clock = make(failure_threshold=1, reset_timeout=10)
    trip(breaker, 1)
    clock.advance(10)
    assert breaker.allow()  # the trial is lost
    clock.advance(5)
    assert not breaker.allow()
    clock.advance(5)
    assert breaker.allow()
    assert breaker.state is CircuitState.HALF_OPEN


def test_late_reports_while_open_change_nothing() -> None:
    """Outcomes of calls started before the circuit opened are ignored."""
    breaker, clock = make(failure_threshold=1, reset_timeout=10)
    trip(breaker, 1)
    clock.advance(5)
    breaker.record_success()
    assert breaker.state is CircuitState.OPEN
    breaker.record_failure()
    assert breaker.opened_count == 1
    clock.advance(5)  # the timeout was not extended by the late failure
    assert breaker.allow()


def test_state_values_are_strings() -> None:
    """States render as plain strings for /readyz and metrics labels."""
    assert [str(state) for state in CircuitState] == ["closed", "open", "half_open"]


def test_config_defaults() -> None:
    """Defaults: 5 failures, 30 s, one trial."""
    config = CircuitConfig()
    assert (config.failure_threshold, config.reset_timeout, config.half_open_max_calls) == (
        5,
        30.0,
        1,
    )


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"failure_threshold": 0}, "redis.failure_threshold"),
        ({"failure_threshold": True}, "redis.failure_threshold"),
        ({"failure_threshold": 2.5}, "redis.failure_threshold"),
        ({"reset_timeout": 0}, "redis.reset_timeout"),
        ({"reset_timeout": float("inf")}, "redis.reset_timeout"),
        ({"reset_timeout": float("nan")}, "redis.reset_timeout"),
        ({"reset_timeout": "30"}, "redis.reset_timeout"),
        ({"half_open_max_calls": 0}, "redis.half_open_max_calls"),
    ],
)
def test_config_refuses_bad_values(settings: dict[str, object], setting: str) -> None:
    """Each bad value names its setting, prefixed with the breaker's section."""
    with pytest.raises(ConfigurationError) as caught:
        CircuitConfig(name="redis", **settings)  # type: ignore[arg-type]
    assert caught.value.setting == setting
