"""A circuit breaker for calls to things that can fail.

Use one around every dependency that can be slow or down: the reputation
provider, Redis, an upstream. While the dependency fails, the breaker stops
calling it, so that a dead dependency costs nothing per request and is not
hammered while it recovers.

Theory of operation (the usual three states)::

    CLOSED --(failure_threshold consecutive failures)--> OPEN
    OPEN --(reset_timeout elapsed, at the next allow())--> HALF_OPEN
    HALF_OPEN --(a trial call succeeds)--> CLOSED
    HALF_OPEN --(a trial call fails)--> OPEN

* The caller asks :meth:`CircuitBreaker.allow` before each call and reports
  the outcome with :meth:`~CircuitBreaker.record_success` or
  :meth:`~CircuitBreaker.record_failure`. When ``allow()`` says no, the caller
  applies its fallback (for the reputation provider: "not known to be bad").
* In HALF_OPEN at most ``half_open_max_calls`` trial calls are let through.
  If none of them reports back within ``reset_timeout`` (a cancelled call, a
  caller that forgot), a new round of trials is allowed, so that the breaker
  cannot stay stuck half-open.
* Time comes from the injected :class:`~wsguard.core.clock.Clock`; the breaker
  does no I/O and never sleeps. It is not thread-safe: use it from one event
  loop.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from wsguard.core.clock import Clock
from wsguard.exceptions import ConfigurationError

__all__ = ["CircuitBreaker", "CircuitConfig", "CircuitState"]


class CircuitState(enum.StrEnum):
    """The state of a :class:`CircuitBreaker`; the value is shown in /readyz and metrics."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, kw_only=True)
class CircuitConfig:
    """Settings of one circuit breaker.

    Args:
        name: the config section of the breaker, used in error messages
            (``"<name>.failure_threshold"``).
        failure_threshold: consecutive failures that open the circuit.
        reset_timeout: seconds the circuit stays open before trial calls.
        half_open_max_calls: trial calls allowed while half-open.

    Raises:
        ConfigurationError: for a value out of range.
    """

    name: str = "circuit"
    failure_threshold: int = 5
    reset_timeout: float = 30.0
    half_open_max_calls: int = 1

    def __post_init__(self) -> None:
        if not _is_int(self.failure_threshold) or self.failure_threshold < 1:
            raise ConfigurationError(f"{self.name}.failure_threshold", "must be an integer >= 1")
        if (
            isinstance(self.reset_timeout, bool)
            or not isinstance(self.reset_timeout, int | float)
            or not math.isfinite(self.reset_timeout)
            or self.reset_timeout <= 0
        ):
            raise ConfigurationError(f"{self.name}.reset_timeout", "must be a number > 0")
        if not _is_int(self.half_open_max_calls) or self.half_open_max_calls < 1:
            raise ConfigurationError(f"{self.name}.half_open_max_calls", "must be an integer >= 1")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CircuitBreaker:
    """Stops calling a failing dependency for a while.

    Args:
        name: the dependency's name, for logs and metrics (``"reputation"``).
        config: thresholds and timeouts.
        clock: the source of time.

    Attributes:
        name: as given.
        opened_count: how many times the circuit opened, for metrics.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_failures",
        "_opened_at",
        "_state",
        "_trial_calls",
        "name",
        "opened_count",
    )

    def __init__(self, name: str, config: CircuitConfig, clock: Clock) -> None:
        self.name = name
        self._config = config
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._failures = 0
        # When the circuit opened, then when the current round of trials began.
        self._opened_at = 0.0
        self._trial_calls = 0
        self.opened_count = 0

    # Public methods, called around each call to the dependency.

    def allow(self) -> bool:
        """Whether to make the call now.

        Call it right before the call; when it returns True, report the
        outcome with :meth:`record_success` or :meth:`record_failure`.

        Returns:
            True when CLOSED; False when OPEN, until ``reset_timeout`` has
            passed, after which the circuit is HALF_OPEN and up to
            ``half_open_max_calls`` trial calls get True.
        """
        state = self._state
        if state is CircuitState.CLOSED:
            return True
        now = self._clock.now()
        elapsed = now - self._opened_at
        if state is CircuitState.OPEN:
            if elapsed < self._config.reset_timeout:
                return False
            self._start_trials(now)
        elif elapsed >= self._config.reset_timeout:
            # Half-open, and no trial reported back in time: try again.
            self._start_trials(now)
        if self._trial_calls < self._config.half_open_max_calls:
            self._trial_calls += 1
            return True
        return False

    def record_success(self) -> None:
        """Report a call that succeeded: closes a half-open circuit."""
        if self._state is CircuitState.OPEN:
            # A call allowed before the circuit opened, finishing late: the
            # failures since then still stand.
            return
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._trial_calls = 0

    def record_failure(self) -> None:
        """Report a call that failed or timed out.

        In CLOSED, counts a consecutive failure and opens the circuit at
        ``failure_threshold``; in HALF_OPEN, opens it again at once.
        """
        if self._state is CircuitState.OPEN:
            return  # a late report; the reset timeout is not extended
        self._failures += 1
        if (
            self._state is CircuitState.HALF_OPEN
            or self._failures >= self._config.failure_threshold
        ):
            self._open()

    # Introspection.

    @property
    def state(self) -> CircuitState:
        """The current state.

        An OPEN circuit whose ``reset_timeout`` has passed still reads OPEN
        until the next :meth:`allow` moves it to HALF_OPEN.
        """
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted since the last success."""
        return self._failures

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name} {self._state.value} failures={self._failures}>"

    # Transitions.

    def _open(self) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = self._clock.now()
        self._trial_calls = 0
        self.opened_count += 1

    def _start_trials(self, now: float) -> None:
        self._state = CircuitState.HALF_OPEN
        self._opened_at = now
        self._trial_calls = 0
