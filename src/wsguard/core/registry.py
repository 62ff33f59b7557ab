"""The live sessions of this process, and the timer decisions made over them.

:class:`SessionRegistry` indexes sessions by id and by user, enforces the
per-user limit (:meth:`SessionRegistry.admit`) and, once per tick, says which
sessions must be closed or warned (:meth:`SessionRegistry.due`). It is pure: it
never reads a clock, never closes anything and never sends a frame; the caller
passes ``now`` and acts on the answers.

Nothing of a session outlives :meth:`SessionRegistry.remove`: the per-session
record and, with the user's last session, the user's index entry are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

from wsguard.core.session import Session
from wsguard.exceptions import ConfigurationError
from wsguard.typing import SessionId

__all__ = ["Decision", "SessionConfig", "SessionRegistry"]

Decision: TypeAlias = Literal["lifetime", "idle", "expired", "expiring", "rotate_csrf"]
"""What :meth:`SessionRegistry.due` asks the caller to do with one session.

* ``"lifetime"``: the absolute lifetime is over; close with 4408.
* ``"idle"``: no application message for ``idle_timeout``; close with 4408.
* ``"expired"``: the token expired without a refresh; close with 4401.
* ``"expiring"``: send ``token_expiring`` (once per ``expires_at`` value).
* ``"rotate_csrf"``: rotate the CSRF token and send ``csrf_rotated``.
"""


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """Section ``[sessions]``: per-user limit, lifetimes, token and CSRF timers.

    Attributes:
        max_sessions_per_user: live sessions one ``sub`` may hold at once.
        on_limit: at the limit, ``"refuse"`` the new handshake (429) or
            ``"evict_oldest"`` (the oldest session is closed with 4409).
        max_lifetime: absolute session lifetime in seconds (close 4408).
        idle_timeout: seconds without an application message before closing
            with 4408; ``None`` (the default) turns the idle limit off.
        token_expiring_lead: send ``token_expiring`` this many seconds before ``exp``.
        csrf_rotation_interval: seconds between CSRF rotations.
        csrf_grace: seconds the previous CSRF token stays valid after a rotation.
    """

    max_sessions_per_user: int = 5
    on_limit: Literal["refuse", "evict_oldest"] = "refuse"
    max_lifetime: float = 43_200.0
    idle_timeout: float | None = None
    token_expiring_lead: float = 60.0
    csrf_rotation_interval: float = 900.0
    csrf_grace: float = 30.0

    def __post_init__(self) -> None:
        # bool is an int subclass; `true` in TOML must not mean one session.
        if (
            isinstance(self.max_sessions_per_user, bool)
            or not isinstance(self.max_sessions_per_user, int)
            or self.max_sessions_per_user < 1
        ):
            raise ConfigurationError("sessions.max_sessions_per_user", "must be an integer >= 1")
        if self.on_limit not in ("refuse", "evict_oldest"):
            raise ConfigurationError("sessions.on_limit", "must be 'refuse' or 'evict_oldest'")
        _check_seconds("max_lifetime", self.max_lifetime, positive=True)
        if self.idle_timeout is not None:
            _check_seconds("idle_timeout", self.idle_timeout, positive=True)
        _check_seconds("token_expiring_lead", self.token_expiring_lead, positive=False)
        _check_seconds("csrf_rotation_interval", self.csrf_rotation_interval, positive=True)
        _check_seconds("csrf_grace", self.csrf_grace, positive=False)
        if self.csrf_grace >= self.csrf_rotation_interval:
            # Otherwise two old tokens could be valid at once.
            raise ConfigurationError(
                "sessions.csrf_grace", "must be shorter than csrf_rotation_interval"
            )


def _check_seconds(name: str, value: object, *, positive: bool) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
    )
    if not ok:
        problem = "must be a positive number of seconds" if positive else "must be >= 0 seconds"
        raise ConfigurationError(f"sessions.{name}", problem)


class _Entry:
    """What the registry keeps per session, beside the :class:`Session` itself.

    Kept here rather than on :class:`Session`, which is a slots dataclass owned
    by the core's connection code.
    """

    __slots__ = ("session", "handle", "last_activity", "warned_for", "csrf_rotated_at")

    def __init__(self, session: Session, handle: object) -> None:
        self.session = session
        self.handle = handle
        self.last_activity = session.created_at
        self.warned_for: float | None = None  # the expires_at already warned about
        self.csrf_rotated_at = session.created_at


class SessionRegistry:
    """Live sessions of this process: by id and by user. Nothing survives a disconnect.

    Not thread-safe: the adapters call it from one event loop.

    Args:
        config: the ``[sessions]`` policy.
    """

    def __init__(self, config: SessionConfig) -> None:
        self._config = config
        self._entries: dict[SessionId, _Entry] = {}
        # Per user, session ids in insertion order (a dict used as an ordered set).
        self._by_user: dict[str, dict[SessionId, None]] = {}
        # Users holding the maximum, kept as sessions come and go: the metric is
        # read on every handshake, and counting would cost O(users) each time.
        self._users_at_limit = 0

    @property
    def config(self) -> SessionConfig:
        """The policy this registry applies."""
        return self._config

    # -- membership ---------------------------------------------------------

    def admit(self, user: str, now: float) -> tuple[bool, SessionId | None]:
        """Decide whether ``user`` may open one more session, before :meth:`add`.

        Nothing changes here: under ``evict_oldest`` the caller closes the returned
        session with 4409 and calls :meth:`remove` for it.

        Args:
            user: the token's ``sub``.
            now: the current time; unused today, kept so the policy can grow a
                time-based rule without an API change.

        Returns:
            ``(True, None)`` when there is room; ``(True, oldest_id)`` under
            ``evict_oldest`` at the limit; ``(False, None)`` under ``refuse`` at
            the limit (answer 429).
        """
        del now
        ids = self._by_user.get(user)
        if ids is None or len(ids) < self._config.max_sessions_per_user:
            return True, None
        if self._config.on_limit == "refuse":
            return False, None
        return True, self._oldest(ids)

    def add(self, session: Session, handle: object) -> None:
        """Register a session that was admitted.

        Its creation time starts the idle and CSRF rotation clocks.

        Args:
            session: the new session.
            handle: the adapter's connection object; opaque here.

        Raises:
            ValueError: a session with this id is already registered.
        """
        if session.id in self._entries:
            raise ValueError("session id already registered")
        self._entries[session.id] = _Entry(session, handle)
        ids = self._by_user.setdefault(session.user, {})
        ids[session.id] = None
        if len(ids) == self._config.max_sessions_per_user:
            self._users_at_limit += 1

    def remove(self, session_id: SessionId) -> None:
        """Forget a session; idempotent.

        Drops the user's index entry along with their last session, so that a
        stream of distinct users cannot grow the registry.
        """
        entry = self._entries.pop(session_id, None)
        if entry is None:
            return
        user = entry.session.user
        ids = self._by_user.get(user)
        if ids is not None and ids.pop(session_id, False) is None:
            if len(ids) == self._config.max_sessions_per_user - 1:
                self._users_at_limit -= 1  # fell below the maximum
            if not ids:
                del self._by_user[user]

    # -- queries -------------------------------------------------------------

    def get(self, session_id: SessionId) -> tuple[Session, object] | None:
        """The session and its handle, or ``None`` when it is not live."""
        entry = self._entries.get(session_id)
        return None if entry is None else (entry.session, entry.handle)

    def by_user(self, user: str) -> list[tuple[Session, object]]:
        """The live sessions of ``user``, oldest (by ``created_at``) first."""
        ids = self._by_user.get(user)
        if ids is None:
            return []
        entries = [self._entries[sid] for sid in ids]
        # Stable sort: sessions created in the same instant stay in insertion order.
        entries.sort(key=lambda e: e.session.created_at)
        return [(e.session, e.handle) for e in entries]

    def all(self) -> list[Session]:
        """Every live session, in insertion order."""
        return [entry.session for entry in self._entries.values()]

    def count(self) -> int:
        """The number of live sessions."""
        return len(self._entries)

    def users(self) -> int:
        """The number of users with at least one live session."""
        return len(self._by_user)

    def users_at_limit(self) -> int:
        """The number of users holding ``max_sessions_per_user`` sessions (a metric)."""
        return self._users_at_limit

    # -- activity and timers -------------------------------------------------

    def touch(self, session_id: SessionId, now: float) -> None:
        """Record an application message on ``session_id``; unknown ids are ignored.

        Heartbeats and control frames should not call this: the idle limit is
        about application messages.
        """
        entry = self._entries.get(session_id)
        if entry is not None and now > entry.last_activity:
            entry.last_activity = now

    def last_activity(self, session_id: SessionId) -> float | None:
        """The time of the last application message (or creation), if live."""
        entry = self._entries.get(session_id)
        return None if entry is None else entry.last_activity

    def mark_csrf_rotated(self, session_id: SessionId, now: float) -> None:
        """Restart the CSRF schedule after a rotation :meth:`due` did not ask for.

        A token refresh rotates the CSRF token too; calling this then keeps the
        next scheduled rotation a full interval away. Unknown ids are ignored.
        """
        entry = self._entries.get(session_id)
        if entry is not None:
            entry.csrf_rotated_at = now

    def due(self, now: float) -> list[tuple[SessionId, Decision]]:
        """The timer decisions for one tick, at most one per session.

        Closing decisions come first, in this order: ``"lifetime"``, ``"idle"``,
        ``"expired"``; a session that must close gets nothing else. Otherwise
        ``"expiring"`` comes before ``"rotate_csrf"``; when both are due the
        rotation is reported on a later tick (it is not recorded until reported).

        ``"expiring"`` is reported once per ``expires_at`` value: after a refresh
        changes ``session.expires_at``, the new expiry is warned about again.
        Reporting ``"rotate_csrf"`` records ``now`` as the rotation time, so the
        caller must rotate when told.

        Cost: one pass over the live sessions, O(n) with a few comparisons each;
        about a millisecond for 10,000 sessions, fine for a 1 s tick.

        Args:
            now: the current time, seconds since the epoch.

        Returns:
            ``(session_id, decision)`` pairs, in insertion order of the sessions.
        """
        config = self._config
        decisions: list[tuple[SessionId, Decision]] = []
        for sid, entry in self._entries.items():
            session = entry.session
            if now >= session.created_at + config.max_lifetime:
                decisions.append((sid, "lifetime"))
            elif (
                config.idle_timeout is not None and now - entry.last_activity >= config.idle_timeout
            ):
                decisions.append((sid, "idle"))
            elif now >= session.expires_at:
                decisions.append((sid, "expired"))
            elif (
                now >= session.expires_at - config.token_expiring_lead
                and entry.warned_for != session.expires_at
            ):
                entry.warned_for = session.expires_at
                decisions.append((sid, "expiring"))
            elif now >= entry.csrf_rotated_at + config.csrf_rotation_interval:
                entry.csrf_rotated_at = now
                decisions.append((sid, "rotate_csrf"))
        return decisions

    # -- helpers -------------------------------------------------------------

    def _oldest(self, ids: dict[SessionId, None]) -> SessionId:
        # min() keeps the first of equal keys, i.e. the earliest inserted.
        return min(ids, key=lambda sid: self._entries[sid].session.created_at)
