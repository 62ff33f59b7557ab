"""Rate limits: token buckets, a sliding counter, progressive backoff, connection caps.

Theory of operation:

* Every object here is pure and takes the time as ``now`` (seconds, any epoch,
  as long as one process uses one clock). Nothing reads a clock, sleeps or locks:
  the per-message path is synchronous and one connection lives on one process.
* :class:`TokenBucket` is the per-message primitive: ``burst`` tokens of capacity,
  refilled continuously at ``rate`` tokens per second. Refill is computed lazily
  from the time elapsed since the last call, so an idle bucket costs nothing.
  :meth:`TokenBucket.take` returns ``0.0`` when allowed and otherwise the wait,
  so the allowed path returns a float and allocates nothing.
* :class:`MessageLimiter` holds everything of one connection: its own bucket,
  a reference to its user's bucket (shared by every connection of that user on
  this process, see :class:`UserBuckets`), optional per-type buckets, a ping
  bucket and a :class:`Backoff`. Each refusal outside a backoff is a violation;
  violations inside ``violation_window`` double the backoff (1 s, 2 s, 4 s ...
  capped at ``backoff_max``) and, once there are ``violations_to_disconnect`` of
  them, :attr:`MessageLimiter.should_disconnect` turns on (close 4429 and ban).
* :class:`SlidingCounter` is for handshake attempts per IP: a two-bucket sliding
  window approximation with fixed memory. Refused attempts are counted too, so
  a client that keeps hammering stays refused until it actually backs off.
* :class:`ConnectionCounter` counts open connections per IP key and in total.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from wsguard.exceptions import ConfigurationError

__all__ = [
    "Backoff",
    "ConnectionCounter",
    "MessageLimiter",
    "RateLimitConfig",
    "SlidingCounter",
    "TokenBucket",
    "UserBuckets",
]

# Room for rounding, as time: a client that waits exactly the announced
# retry-after must not be refused because the subtraction of two epoch times
# (about 2.4e-7 s apart at their resolution today) came out a few ulps short.
_TIME_SLACK = 1e-5

# Violation timestamps kept per connection at most; past this many the backoff
# is already capped and the disconnect already due, so older ones change nothing.
_MAX_VIOLATION_HISTORY = 64


def _check_positive(setting: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigurationError(setting, "must be a positive finite number")


def _check_count(setting: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(setting, "must be an integer of at least 1")


@dataclass(frozen=True, kw_only=True)
class RateLimitConfig:
    """Budgets per connection, per user, per IP and in total.

    Rates are counts per window; the buckets refill at ``rate / window`` per second.

    Attributes:
        message_rate: messages per ``message_window`` per connection.
        message_window: the window of ``message_rate`` and ``user_rate``, seconds.
        message_burst: messages a connection may send at once.
        user_rate: messages per ``message_window`` summed over a user's
            connections on this process, so that many tabs do not multiply it.
        user_burst: messages a user may send at once over all connections.
        ping_rate: client pings per ``ping_window``; also the ping burst.
        ping_window: seconds.
        handshake_attempts: handshakes per IP per ``handshake_window``.
        handshake_window: seconds.
        max_connections_per_ip: open connections per IP key.
        max_connections_total: open connections on this process.
        backoff_base: the first backoff, seconds; doubles per violation inside
            ``violation_window``.
        backoff_max: the longest backoff, seconds.
        violation_window: seconds during which violations add up.
        violations_to_disconnect: violations inside ``violation_window`` that
            close the connection with 4429 and ban its IP and user.
    """

    message_rate: float = 100.0
    message_window: float = 60.0
    message_burst: int = 20
    user_rate: float = 300.0
    user_burst: int = 60
    ping_rate: float = 5.0
    ping_window: float = 10.0
    handshake_attempts: int = 10
    handshake_window: float = 10.0
    max_connections_per_ip: int = 20
    max_connections_total: int = 10_000
    backoff_base: float = 1.0
    backoff_max: float = 900.0
    violation_window: float = 60.0
    violations_to_disconnect: int = 5

    def __post_init__(self) -> None:
        for name in (
            "message_rate",
            "message_window",
            "user_rate",
            "ping_rate",
            "ping_window",
            "handshake_window",
            "backoff_base",
            "backoff_max",
            "violation_window",
        ):
            _check_positive(f"rate_limits.{name}", getattr(self, name))
        for name in (
            "message_burst",
            "user_burst",
            "handshake_attempts",
            "max_connections_per_ip",
            "max_connections_total",
            "violations_to_disconnect",
        ):
            _check_count(f"rate_limits.{name}", getattr(self, name))
        if self.backoff_max < self.backoff_base:
            raise ConfigurationError("rate_limits.backoff_max", "must be at least backoff_base")


class TokenBucket:
    """A token bucket: ``burst`` tokens of capacity, refilled at ``rate_per_s``.

    It starts full. Time going backwards (a clock step) refills nothing and never
    removes tokens.

    Args:
        rate_per_s: tokens added per second.
        burst: the capacity, and the tokens available at creation.
        now: the current time, seconds.
    """

    __slots__ = ("_capacity", "_rate", "_slack", "_tokens", "_updated")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError("rate_per_s must be a positive finite number")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._rate = float(rate_per_s)
        self._slack = self._rate * _TIME_SLACK  # tokens refilled in _TIME_SLACK
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens if they are available.

        Args:
            now: the current time, seconds.
            cost: tokens to take.

        Returns:
            ``0.0`` when allowed (the tokens are consumed); otherwise the seconds
            until ``cost`` tokens will be available, and nothing is consumed.
            ``math.inf`` when ``cost`` exceeds the capacity.
        """
        elapsed = now - self._updated
        if elapsed > 0.0:
            tokens = self._tokens + elapsed * self._rate
            self._tokens = tokens if tokens < self._capacity else self._capacity
            self._updated = now
        if self._tokens + self._slack >= cost:
            self._tokens -= cost
            return 0.0
        if cost > self._capacity:
            return math.inf
        return (cost - self._tokens) / self._rate

    def refund(self, cost: float = 1.0) -> None:
        """Give back tokens taken by :meth:`take`, up to the capacity.

        Used when a later check refuses the same message, so that a refusal
        consumes nothing.
        """
        tokens = self._tokens + cost
        self._tokens = tokens if tokens < self._capacity else self._capacity

    def tokens(self, now: float) -> float:
        """The tokens available at ``now``, without taking any."""
        elapsed = now - self._updated
        if elapsed <= 0.0:
            return self._tokens
        return min(self._capacity, self._tokens + elapsed * self._rate)


class SlidingCounter:
    """Events in the last ``window`` seconds, approximately, in fixed memory.

    Two fixed windows are kept: the current one and the previous one. The count
    at time ``t`` is ``previous * (1 - f) + current``, where ``f`` is the fraction
    of the current window already elapsed: the previous window's events are
    assumed to be spread evenly (the approximation used by Cloudflare and by
    the ``limits`` library's moving window alternative).

    Refused attempts are counted as well. A client that keeps trying while
    refused therefore stays refused until it stops for a while; it can never
    reset the counter or earn a steady ``limit`` per window by hammering.
    Counts are plain integers: a flood cannot overflow them.

    Args:
        limit: events allowed per ``window``.
        window: seconds.
    """

    __slots__ = ("_current", "_index", "_limit", "_previous", "_window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if not (math.isfinite(window) and window > 0):
            raise ValueError("window must be a positive finite number")
        self._limit = limit
        self._window = float(window)
        self._index = -1  # index of the current fixed window; -1 before any hit
        self._previous = 0
        self._current = 0

    def _roll(self, index: int) -> None:
        if index > self._index:
            # Skipping more than one window means the previous one was empty.
            self._previous = self._current if index == self._index + 1 else 0
            self._current = 0
            self._index = index

    def hit(self, now: float) -> float:
        """Count one attempt.

        Args:
            now: the current time, seconds.

        Returns:
            ``0.0`` when the attempt is within the limit; otherwise the seconds
            until an attempt would be allowed if none were made meanwhile. The
            attempt is counted in both cases.
        """
        window = self._window
        index = math.floor(now / window)
        self._roll(index)
        fraction = now / window - index
        estimate = self._previous * (1.0 - fraction) + self._current
        self._current += 1
        slack = self._previous * _TIME_SLACK / window  # the estimate's rounding, as time
        if estimate + 1.0 <= self._limit + slack:
            return 0.0
        return self._wait(now, fraction)

    def _wait(self, now: float, fraction: float) -> float:
        # Find the earliest time at which ``estimate + 1 <= limit``.
        room = self._limit - 1.0
        if self._current <= room and self._previous > 0:
            # Allowed later in this window, as the previous window fades out.
            needed = 1.0 - (room - self._current) / self._previous
            return max(0.0, (needed - fraction) * self._window)
        # Only in the next window, as the current window fades out there.
        needed = 1.0 - room / self._current
        return (1.0 - fraction + needed) * self._window

    def count(self, now: float) -> float:
        """The estimated number of events in the last ``window`` seconds."""
        index = math.floor(now / self._window)
        fraction = now / self._window - index
        if index == self._index:
            return self._previous * (1.0 - fraction) + self._current
        if index == self._index + 1:
            return self._current * (1.0 - fraction)
        return 0.0

    def is_idle(self, now: float) -> bool:
        """True when the counter is back to zero and may be dropped by its owner."""
        return math.floor(now / self._window) >= self._index + 2


class Backoff:
    """The progressive penalties of one connection.

    Each violation imposes ``backoff_base * 2 ** (n - 1)`` seconds, capped at
    ``backoff_max``, where ``n`` is the number of violations inside the last
    ``violation_window`` seconds (this one included).

    Args:
        config: the rate limit settings.
    """

    __slots__ = ("_base", "_disconnect_at", "_max", "_times", "_until", "_window")

    def __init__(self, config: RateLimitConfig) -> None:
        self._base = config.backoff_base
        self._max = config.backoff_max
        self._window = config.violation_window
        self._disconnect_at = config.violations_to_disconnect
        # Made at the first violation: most connections never have one, and an
        # empty deque costs about 600 bytes per connection.
        self._times: deque[float] | None = None
        self._until = -math.inf

    def blocked_for(self, now: float) -> float:
        """Seconds remaining in the current backoff, ``0.0`` if none."""
        remaining = self._until - now
        return remaining if remaining > 0.0 else 0.0

    def violation(self, now: float) -> tuple[float, bool]:
        """Record a violation.

        Args:
            now: the current time, seconds.

        Returns:
            The backoff imposed from ``now``, in seconds, and whether the
            violations inside the window have reached ``violations_to_disconnect``.
        """
        times = self._times
        if times is None:
            # Enough history to reach both the cap and the disconnect; no more.
            to_cap = math.ceil(math.log2(self._max / self._base)) + 1
            history = min(_MAX_VIOLATION_HISTORY, max(self._disconnect_at, to_cap))
            times = self._times = deque(maxlen=history)
        cutoff = now - self._window
        while times and times[0] <= cutoff:
            times.popleft()
        times.append(now)
        n = len(times)
        backoff = min(self._max, self._base * 2.0 ** min(n - 1, _MAX_VIOLATION_HISTORY))
        self._until = max(self._until, now + backoff)
        return backoff, n >= self._disconnect_at

    def violations(self, now: float) -> int:
        """The violations inside the last ``violation_window`` seconds."""
        if self._times is None:
            return 0
        cutoff = now - self._window
        return sum(1 for t in self._times if t > cutoff)


# Most connections have no per-type budgets: one empty mapping for all of them.
_NO_TYPE_BUCKETS: Mapping[str, TokenBucket] = MappingProxyType({})


class MessageLimiter:
    """Every message budget of one connection.

    Call :meth:`check` before parsing a message and :meth:`check_type` once its
    envelope has given the type. Both return ``0.0`` when allowed, else the
    retry-after in seconds (never ``0.0``; round it up for ``retryAfterMs``).

    A refusal outside a backoff counts one violation and starts or doubles the
    backoff. A message that arrives during a backoff is refused at once but does
    not count another violation: otherwise a client would climb from 1 s to the
    disconnect within a few milliseconds and the doubling would mean nothing.

    Args:
        config: the rate limit settings.
        user_bucket: the user's shared bucket, from :meth:`UserBuckets.acquire`.
        now: the current time, seconds.
        type_limits: ``type name -> (rate, window, burst)`` for types with their
            own budget, such as ``{"file_upload": (5, 60, 5)}``.
    """

    __slots__ = ("_backoff", "_bucket", "_config", "_disconnect", "_ping", "_types", "_user")

    def __init__(
        self,
        config: RateLimitConfig,
        user_bucket: TokenBucket,
        now: float,
        type_limits: Mapping[str, tuple[float, float, int]] | None = None,
    ) -> None:
        self._config = config
        self._bucket = TokenBucket(
            config.message_rate / config.message_window, config.message_burst, now
        )
        self._user = user_bucket
        # The ping budget and the backoff are made when first needed: most
        # connections never send a ping of their own or break a limit, and
        # every object made at the handshake costs its time and memory.
        self._ping: TokenBucket | None = None
        self._types: Mapping[str, TokenBucket] = _NO_TYPE_BUCKETS  # shared: never written
        if type_limits:
            types: dict[str, TokenBucket] = {}
            for name, (rate, window, burst) in type_limits.items():
                if not (math.isfinite(window) and window > 0):
                    raise ValueError(f"type {name!r}: window must be a positive finite number")
                types[name] = TokenBucket(rate / window, burst, now)
            self._types = types
        self._backoff: Backoff | None = None
        self._disconnect = False

    def _violation(self, now: float, wait: float) -> float:
        if self._backoff is None:
            self._backoff = Backoff(self._config)
        backoff, disconnect = self._backoff.violation(now)
        if disconnect:
            self._disconnect = True
        return wait if wait > backoff else backoff

    def check(self, now: float) -> float:
        """Check a message before parsing: backoff, connection budget, user budget.

        Returns:
            ``0.0`` when allowed (one token taken from each bucket); otherwise the
            retry-after in seconds, and nothing is taken.
        """
        if self._backoff is not None:
            blocked = self._backoff.blocked_for(now)
            if blocked:
                return blocked
        wait = self._bucket.take(now)
        if not wait:
            wait = self._user.take(now)
            if not wait:
                return 0.0
            # The user's budget refused it: the connection's token goes back.
            self._bucket.refund()
        return self._violation(now, wait)

    def check_type(self, type_name: str, now: float) -> float:
        """Check a decoded message against its type's budget, if it has one.

        The tokens taken by :meth:`check` stay taken: the message was read.

        Returns:
            ``0.0`` when allowed or the type has no budget; otherwise the
            retry-after in seconds.
        """
        bucket = self._types.get(type_name)
        if bucket is None:
            return 0.0
        wait = bucket.take(now)
        if not wait:
            return 0.0
        return self._violation(now, wait)

    def check_ping(self, now: float) -> float:
        """Count a ping from the client against ``ping_rate`` per ``ping_window``.

        A ping cannot be refused, only answered or not, so a non-zero result means
        a ping flood: close the connection with 4429. It counts no violation.

        Returns:
            ``0.0`` when within budget; otherwise the seconds until the next
            ping would have been.
        """
        ping = self._ping
        if ping is None:
            config = self._config
            # Full at the first ping, as it would have been since the handshake.
            ping = self._ping = TokenBucket(
                config.ping_rate / config.ping_window, max(1, math.floor(config.ping_rate)), now
            )
        return ping.take(now)

    def blocked_for(self, now: float) -> float:
        """Seconds remaining in the current backoff, ``0.0`` if none."""
        return 0.0 if self._backoff is None else self._backoff.blocked_for(now)

    @property
    def should_disconnect(self) -> bool:
        """Violations reached ``violations_to_disconnect``: close 4429 and ban."""
        return self._disconnect


class UserBuckets:
    """The per-user buckets of this process, shared by a user's connections.

    Reference counted: :meth:`acquire` on open, :meth:`release` on close; a
    user's bucket is dropped with their last connection, so nothing leaks. A user
    who reconnects at once gets a full bucket again, which the per-IP handshake
    budget bounds.

    Args:
        config: the rate limit settings (``user_rate``, ``message_window``,
            ``user_burst``).
    """

    __slots__ = ("_buckets", "_burst", "_rate")

    def __init__(self, config: RateLimitConfig) -> None:
        self._rate = config.user_rate / config.message_window
        self._burst = config.user_burst
        self._buckets: dict[str, tuple[TokenBucket, int]] = {}

    def acquire(self, user: str, now: float) -> TokenBucket:
        """The user's bucket, created on their first connection."""
        entry = self._buckets.get(user)
        if entry is None:
            bucket = TokenBucket(self._rate, self._burst, now)
            self._buckets[user] = (bucket, 1)
            return bucket
        self._buckets[user] = (entry[0], entry[1] + 1)
        return entry[0]

    def release(self, user: str) -> None:
        """Release one connection's reference; unknown users are ignored."""
        entry = self._buckets.get(user)
        if entry is None:
            return
        if entry[1] <= 1:
            del self._buckets[user]
        else:
            self._buckets[user] = (entry[0], entry[1] - 1)

    def __len__(self) -> int:
        return len(self._buckets)


class ConnectionCounter:
    """Open connections per IP key and in total, with caps.

    Args:
        per_ip: open connections allowed per key.
        total: open connections allowed in total.
    """

    __slots__ = ("_counts", "_per_ip", "_total", "_total_cap")

    def __init__(self, per_ip: int, total: int) -> None:
        self._per_ip = per_ip
        self._total_cap = total
        self._counts: dict[str, int] = {}
        self._total = 0

    def try_open(self, key: str, *, exempt: bool = False) -> int:
        """Count a new connection if the caps allow it.

        The per-IP cap is checked first, so that one abusive IP is told 429
        (its own fault) rather than 503.

        Args:
            key: the client's rate key.
            exempt: skip the per-IP cap (``exempt_ips``); the connection is still
                counted under its key and in the total, and the total cap applies.

        Returns:
            ``0`` if opened; ``429`` at the per-IP cap; ``503`` at the total cap.
        """
        count = self._counts.get(key, 0)
        if not exempt and count >= self._per_ip:
            return 429
        if self._total >= self._total_cap:
            return 503
        self._counts[key] = count + 1
        self._total += 1
        return 0

    def close(self, key: str) -> None:
        """Count a closed connection; a key at zero is removed. Unknown keys are ignored."""
        count = self._counts.get(key)
        if count is None:
            return
        if count <= 1:
            del self._counts[key]
        else:
            self._counts[key] = count - 1
        self._total -= 1

    def count(self, key: str) -> int:
        """Open connections under ``key``."""
        return self._counts.get(key, 0)

    @property
    def total(self) -> int:
        """Open connections in total."""
        return self._total

    def __len__(self) -> int:
        """Keys with at least one open connection."""
        return len(self._counts)
