"""Temporary bans of IPs and users, escalating for repeat offenders.

Theory of operation:

* One dictionary maps ``(kind, key)`` to the latest :class:`Ban` of that key,
  active or expired. An active ban refuses the handshake (403); an expired one
  is kept only as escalation history, for ``memory`` seconds after it ended.
* A new ban of a key whose previous ban ended less than ``memory`` seconds ago
  doubles: ``base``, ``2 * base``, ``4 * base`` ... capped at ``max``. History is
  measured from the end of the previous ban, not its start, so that a key that
  reaches the 24 h cap does not fall back to 1 min the moment it is released.
* Banning a key that is already banned, without an explicit duration, returns
  the existing ban unchanged: one user's several connections, all closed for
  the same flood, must not escalate the ban once per connection.
* Expired entries are dropped lazily by :meth:`BanList.banned` and
  :meth:`BanList.list` once past ``memory``, and by :meth:`BanList.prune`,
  which the owner calls from a timer, so memory stays bounded by the keys
  banned in the last ``max + memory`` seconds.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass

from wsguard.exceptions import ConfigurationError

__all__ = ["BAN_KINDS", "Ban", "BanConfig", "BanList"]

BAN_KINDS: frozenset[str] = frozenset({"ip", "user"})
"""What a ban applies to: an IP rate key, or a user (the token's ``sub``)."""

# Doubling stops changing anything long before this; it bounds 2 ** n.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True, kw_only=True)
class BanConfig:
    """Ban durations.

    Attributes:
        base: the first ban, seconds.
        max: the longest automatic ban, seconds.
        memory: seconds after a ban ends during which a new ban of the same key
            doubles; after that the key starts again at ``base``.
    """

    base: float = 60.0
    max: float = 86_400.0
    memory: float = 86_400.0

    def __post_init__(self) -> None:
        for name in ("base", "max", "memory"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigurationError(f"bans.{name}", "must be a positive finite number")
        if self.max < self.base:
            raise ConfigurationError("bans.max", "must be at least bans.base")


@dataclass(frozen=True, slots=True)
class Ban:
    """One ban.

    Attributes:
        key: the IP rate key or the user.
        kind: ``"ip"`` or ``"user"``.
        until: when it ends, seconds (``math.inf`` for a permanent ban).
        reason: a short fixed text for the log and the admin API.
        count: how many bans of this key in a row, each within ``memory`` of the
            previous one's end; 1 for a first ban.
    """

    key: str
    kind: str
    until: float
    reason: str
    count: int


class BanList:
    """The bans of this process (or the state store's copy of them).

    Args:
        config: the ban settings.
    """

    __slots__ = ("_bans", "_config")

    def __init__(self, config: BanConfig) -> None:
        self._config = config
        self._bans: dict[tuple[str, str], Ban] = {}

    def ban(
        self,
        kind: str,
        key: str,
        now: float,
        reason: str,
        duration: float | None = None,
    ) -> Ban:
        """Ban ``key``.

        Args:
            kind: ``"ip"`` or ``"user"``.
            key: the IP rate key or the user.
            now: the current time, seconds.
            reason: a short fixed text; never client data.
            duration: seconds (``math.inf`` for ever), replacing any current ban
                of the key; ``None`` escalates automatically and keeps a current
                ban as it is.

        Returns:
            The ban now in force.

        Raises:
            ValueError: unknown ``kind`` or a duration that is not positive.
        """
        if kind not in BAN_KINDS:
            raise ValueError(f"kind must be 'ip' or 'user', not {kind!r}")
        if duration is not None and not duration > 0:  # also refuses NaN
            raise ValueError("duration must be positive")
        slot = (kind, key)
        previous = self._bans.get(slot)
        if previous is not None and previous.until > now:
            if duration is None:
                return previous
            count = previous.count
        elif previous is not None and now - previous.until <= self._config.memory:
            count = previous.count + 1
        else:
            count = 1
        if duration is None:
            doublings = min(count - 1, _MAX_DOUBLINGS)
            duration = min(self._config.max, self._config.base * 2.0**doublings)
        ban = Ban(key=key, kind=kind, until=now + duration, reason=reason, count=count)
        self._bans[slot] = ban
        return ban

    def unban(self, kind: str, key: str) -> bool:
        """Lift a ban and forget its escalation history (it may have been a mistake).

        Returns:
            True if the key was banned (or remembered), False otherwise.
        """
        return self._bans.pop((kind, key), None) is not None

    def banned(self, kind: str, key: str, now: float) -> Ban | None:
        """The ban in force on ``key``, or ``None``."""
        ban = self._bans.get((kind, key))
        if ban is None:
            return None
        if ban.until > now:
            return ban
        if now - ban.until > self._config.memory:
            del self._bans[(kind, key)]
        return None

    def list(self, now: float) -> builtins.list[Ban]:
        """The bans in force, soonest to end first; prunes as a side effect."""
        self.prune(now)
        return sorted((ban for ban in self._bans.values() if ban.until > now), key=_by_until)

    def prune(self, now: float) -> None:
        """Forget bans that ended more than ``memory`` seconds ago."""
        memory = self._config.memory
        stale = [slot for slot, ban in self._bans.items() if now - ban.until > memory]
        for slot in stale:
            del self._bans[slot]

    def __len__(self) -> int:
        """Keys remembered: bans in force and escalation history."""
        return len(self._bans)


def _by_until(ban: Ban) -> tuple[float, str, str]:
    return (ban.until, ban.kind, ban.key)
