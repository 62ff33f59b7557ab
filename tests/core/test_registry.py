"""The session registry: per-user limit, cleanup, and the timer decisions of due()."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsguard.core.clock import FakeClock
from wsguard.core.registry import SessionConfig, SessionRegistry
from wsguard.core.session import Session, new_session_id
from wsguard.exceptions import ConfigurationError
from wsguard.typing import SessionId, UserId

T0 = 1_764_400_000.0


def make_session(
    user: str = "alice", created_at: float = T0, expires_at: float | None = None
) -> Session:
    return Session(
        id=new_session_id(),
        user=UserId(user),
        roles=frozenset({"user"}),
        peer="203.0.113.7",
        user_agent="test",
        created_at=created_at,
        expires_at=created_at + 3600 if expires_at is None else expires_at,
    )


def registry(**config: Any) -> SessionRegistry:
    return SessionRegistry(SessionConfig(**config))


# -- config -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_sessions_per_user", 0),
        ("max_sessions_per_user", True),
        ("max_sessions_per_user", 2.5),
        ("on_limit", "kick"),
        ("max_lifetime", 0),
        ("max_lifetime", float("inf")),
        ("idle_timeout", -1.0),
        ("token_expiring_lead", -1.0),
        ("csrf_rotation_interval", 0),
        ("csrf_grace", float("nan")),
        ("csrf_grace", 900.0),
    ],
)
def test_config_rejects_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        SessionConfig(**{field: value})
    assert info.value.setting == f"sessions.{field}"


def test_config_defaults() -> None:
    config = SessionConfig()
    assert config.max_sessions_per_user == 5
    assert config.on_limit == "refuse"
    assert config.max_lifetime == 43_200.0
    assert config.idle_timeout is None
    assert (config.token_expiring_lead, config.csrf_rotation_interval) == (60.0, 900.0)
    assert config.csrf_grace == 30.0


# -- membership and the per-user limit ---------------------------------------------


def test_refuse_at_the_limit() -> None:
    reg = registry(max_sessions_per_user=2)
    for i in range(2):
        assert reg.admit("alice", T0) == (True, None)
        reg.add(make_session(created_at=T0 + i), handle=f"conn{i}")
    assert reg.admit("alice", T0) == (False, None)
    assert reg.admit("bob", T0) == (True, None)  # the limit is per user
    assert reg.users_at_limit() == 1
    assert reg.count() == 2 and reg.users() == 1


def test_room_again_after_a_session_leaves() -> None:
    reg = registry(max_sessions_per_user=1)
    session = make_session()
    reg.add(session, None)
    assert reg.admit("alice", T0) == (False, None)
    reg.remove(session.id)
    assert reg.admit("alice", T0) == (True, None)
    assert reg.users_at_limit() == 0


def test_evict_oldest_names_the_oldest_session() -> None:
    reg = registry(max_sessions_per_user=3, on_limit="evict_oldest")
    # Inserted out of creation order: the oldest is the one created first.
    middle = make_session(created_at=T0 + 5)
    oldest = make_session(created_at=T0)
    newest = make_session(created_at=T0 + 9)
    for s in (middle, oldest, newest):
        assert reg.admit("alice", T0 + 10) == (True, None)
        reg.add(s, s.id)
    assert reg.admit("alice", T0 + 10) == (True, oldest.id)
    assert reg.count() == 3  # admit() changes nothing; the caller closes and removes
    reg.remove(oldest.id)
    assert reg.admit("alice", T0 + 10) == (True, None)
    reg.add(make_session(created_at=T0 + 10), None)
    assert reg.admit("alice", T0 + 10) == (True, middle.id)


def test_evict_oldest_tie_goes_to_the_first_added() -> None:
    reg = registry(max_sessions_per_user=2, on_limit="evict_oldest")
    first, second = make_session(), make_session()
    reg.add(first, None)
    reg.add(second, None)
    assert reg.admit("alice", T0) == (True, first.id)


def test_get_by_user_and_all() -> None:
    reg = registry()
    later = make_session(created_at=T0 + 1)
    earlier = make_session(created_at=T0)
    other = make_session(user="bob")
    reg.add(later, "h-later")
    reg.add(earlier, "h-earlier")
    reg.add(other, "h-bob")
    assert reg.get(later.id) == (later, "h-later")
    assert reg.get(SessionId("nope")) is None
    assert reg.by_user("alice") == [(earlier, "h-earlier"), (later, "h-later")]
    assert reg.by_user("carol") == []
    assert reg.all() == [later, earlier, other]
    assert (reg.count(), reg.users()) == (3, 2)


def test_duplicate_id_is_refused() -> None:
    reg = registry()
    session = make_session()
    reg.add(session, None)
    with pytest.raises(ValueError):
        reg.add(session, None)
    assert reg.count() == 1


def test_remove_is_idempotent_and_drops_the_user() -> None:
    reg = registry()
    a, b = make_session(), make_session()
    reg.add(a, None)
    reg.add(b, None)
    reg.remove(a.id)
    assert reg.users() == 1
    reg.remove(b.id)
    reg.remove(b.id)
    reg.remove(SessionId("never-added"))
    assert (reg.count(), reg.users(), reg.users_at_limit()) == (0, 0, 0)
    assert reg.by_user("alice") == []
    assert reg.last_activity(a.id) is None


def test_a_thousand_cycles_leave_nothing_behind() -> None:
    reg = registry(max_sessions_per_user=3, idle_timeout=60.0)

    def cycle(i: int) -> None:
        # Distinct users, so that a leaked per-user entry would show.
        s1 = make_session(user=f"user-{i}", created_at=T0 + i)
        s2 = make_session(user=f"user-{i}", created_at=T0 + i)
        assert reg.admit(s1.user, T0 + i)[0]
        reg.add(s1, object())
        reg.add(s2, object())
        reg.touch(s1.id, T0 + i + 1)
        reg.due(T0 + i + 2)
        reg.remove(s1.id)
        reg.remove(s2.id)

    for i in range(50):  # warm up caches and allocator pools
        cycle(i)
    gc.collect()
    tracemalloc.start()
    try:
        gc.collect()
        baseline, _ = tracemalloc.get_traced_memory()
        for i in range(1000):
            cycle(i)
        assert (reg.count(), reg.users(), reg.users_at_limit()) == (0, 0, 0)
        assert reg.all() == [] and reg.due(T0 + 10_000) == []
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A leak of even one small object per cycle would exceed this by far.
    assert after - baseline < 16 * 1024


# -- activity and due() ---------------------------------------------------------


def test_touch_and_last_activity() -> None:
    reg = registry()
    session = make_session()
    reg.add(session, None)
    assert reg.last_activity(session.id) == T0  # creation counts as activity
    reg.touch(session.id, T0 + 5)
    assert reg.last_activity(session.id) == T0 + 5
    reg.touch(session.id, T0 + 3)  # out-of-order stamps never move it back
    assert reg.last_activity(session.id) == T0 + 5
    reg.touch(SessionId("unknown"), T0)  # ignored


def test_nothing_due_for_a_fresh_session() -> None:
    reg = registry()
    reg.add(make_session(), None)
    assert reg.due(T0) == []
    assert reg.due(T0 + 100) == []


def test_lifetime_edge() -> None:
    clock = FakeClock(T0)
    reg = registry(max_lifetime=100.0, csrf_rotation_interval=1000.0)
    session = make_session(expires_at=T0 + 10_000)
    reg.add(session, None)
    clock.advance(99.999)
    assert reg.due(clock.now()) == []
    clock.advance(0.001)
    assert reg.due(clock.now()) == [(session.id, "lifetime")]
    # Reported again on each tick until the caller removes it.
    assert reg.due(clock.now() + 1) == [(session.id, "lifetime")]


def test_idle_edge_and_touch_postpones_it() -> None:
    clock = FakeClock(T0)
    reg = registry(idle_timeout=30.0)
    session = make_session()
    reg.add(session, None)
    clock.advance(20)
    reg.touch(session.id, clock.now())
    clock.advance(29.5)
    assert reg.due(clock.now()) == []
    clock.advance(0.5)  # exactly 30 s after the last message
    assert reg.due(clock.now()) == [(session.id, "idle")]


def test_idle_is_off_by_default() -> None:
    reg = registry()
    reg.add(make_session(expires_at=T0 + 40_000), None)
    decisions = reg.due(T0 + 39_000)
    assert all(decision != "idle" for _, decision in decisions)


def test_expired_edge() -> None:
    clock = FakeClock(T0)
    reg = registry(token_expiring_lead=0.0)
    session = make_session(expires_at=T0 + 50)
    reg.add(session, None)
    clock.advance(49.9)
    assert reg.due(clock.now()) == []
    clock.advance(0.1)
    assert reg.due(clock.now()) == [(session.id, "expired")]


def test_expiring_is_reported_once_per_expiry() -> None:
    clock = FakeClock(T0)
    reg = registry(token_expiring_lead=60.0)
    session = make_session(expires_at=T0 + 300)
    reg.add(session, None)
    clock.advance(239.9)
    assert reg.due(clock.now()) == []
    clock.advance(0.1)  # exactly 60 s before exp
    assert reg.due(clock.now()) == [(session.id, "expiring")]
    clock.advance(1)
    assert reg.due(clock.now()) == []  # warned already
    # A refresh moves the expiry: the new one is warned about in its turn.
    session.expires_at = T0 + 600
    assert reg.due(clock.now()) == []
    clock.advance(600 - 60 - 241)
    assert clock.now() == T0 + 540
    assert reg.due(clock.now()) == [(session.id, "expiring")]
    assert reg.due(clock.now()) == []
    clock.advance(60)
    assert reg.due(clock.now()) == [(session.id, "expired")]


def test_short_token_is_warned_at_once() -> None:
    reg = registry(token_expiring_lead=60.0)
    session = make_session(expires_at=T0 + 10)
    reg.add(session, None)
    assert reg.due(T0) == [(session.id, "expiring")]
    assert reg.due(T0 + 1) == []


def test_rotate_csrf_schedule() -> None:
    clock = FakeClock(T0)
    reg = registry(csrf_rotation_interval=900.0)
    session = make_session(expires_at=T0 + 100_000)
    reg.add(session, None)
    clock.advance(899)
    assert reg.due(clock.now()) == []
    clock.advance(1)
    assert reg.due(clock.now()) == [(session.id, "rotate_csrf")]
    assert reg.due(clock.now()) == []  # recorded when reported
    clock.advance(899.5)
    assert reg.due(clock.now()) == []
    clock.advance(0.5)
    assert reg.due(clock.now()) == [(session.id, "rotate_csrf")]
    # A rotation done for another reason (token refresh) restarts the schedule.
    clock.advance(500)
    reg.mark_csrf_rotated(session.id, clock.now())
    clock.advance(899)
    assert reg.due(clock.now()) == []
    clock.advance(1)
    assert reg.due(clock.now()) == [(session.id, "rotate_csrf")]


def test_a_late_tick_rotates_from_the_tick_time() -> None:
    reg = registry(csrf_rotation_interval=900.0)
    session = make_session(expires_at=T0 + 100_000)
    reg.add(session, None)
    assert reg.due(T0 + 950) == [(session.id, "rotate_csrf")]
    assert reg.due(T0 + 1800) == []
    assert reg.due(T0 + 1850) == [(session.id, "rotate_csrf")]


def test_one_decision_per_session_closing_first() -> None:
    reg = registry(max_lifetime=100.0, idle_timeout=10.0, csrf_rotation_interval=50.0)
    session = make_session(expires_at=T0 + 100)
    reg.add(session, None)
    # Everything is due at T0 + 100; lifetime wins.
    assert reg.due(T0 + 100) == [(session.id, "lifetime")]


def test_idle_before_expired() -> None:
    reg = registry(idle_timeout=10.0)
    session = make_session(expires_at=T0 + 5)
    reg.add(session, None)
    assert reg.due(T0 + 10) == [(session.id, "idle")]


def test_expiring_before_rotation_then_rotation_next_tick() -> None:
    reg = registry(csrf_rotation_interval=100.0, token_expiring_lead=60.0)
    session = make_session(expires_at=T0 + 150)
    reg.add(session, None)
    assert reg.due(T0 + 100) == [(session.id, "expiring")]
    assert reg.due(T0 + 101) == [(session.id, "rotate_csrf")]


def test_due_covers_every_session() -> None:
    reg = registry(max_lifetime=100.0)
    young = make_session(created_at=T0 + 50, expires_at=T0 + 10_000)
    old = make_session(user="bob", created_at=T0, expires_at=T0 + 10_000)
    reg.add(young, None)
    reg.add(old, None)
    assert reg.due(T0 + 100) == [(old.id, "lifetime")]
    assert reg.due(T0 + 150) == [(young.id, "lifetime"), (old.id, "lifetime")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=60))
def test_users_at_limit_matches_a_recount(steps: list[tuple[bool, int]]) -> None:
    """Adds beyond the limit (concurrent handshakes) and removes in any order."""
    reg = registry(max_sessions_per_user=2)
    live: list[Session] = []
    for add, user in steps:
        if add:
            session = make_session(f"user{user}")
            reg.add(session, None)
            live.append(session)
        elif live:
            reg.remove(live.pop(user % len(live)).id)
            reg.remove(SessionId("not-there"))  # idempotent, no effect on the count
        held: dict[str, int] = {}
        for session in live:
            held[session.user] = held.get(session.user, 0) + 1
        assert reg.users_at_limit() == sum(1 for n in held.values() if n >= 2)
