"""One-time tickets: random, single use, short-lived, bounded."""

from __future__ import annotations

import base64
import hashlib

import pytest

from wsguard.core.auth import Claims
from wsguard.core.clock import FakeClock
from wsguard.core.tickets import TicketsExhausted, TicketStore
from wsguard.exceptions import PolicyViolation

T0 = 1_764_400_000.0


def claims(sub: str = "alice", exp: float = T0 + 3600) -> Claims:
    return Claims(
        subject=sub, roles=frozenset({"user"}), expires_at=exp, issued_at=T0, token_id="j"
    )


def test_issue_then_redeem_once() -> None:
    store = TicketStore()
    c = claims()
    ticket = store.issue(c, T0)
    assert len(store) == 1
    assert store.redeem(ticket, T0 + 1) is c
    assert store.redeem(ticket, T0 + 2) is None  # single use
    assert len(store) == 0


def test_tickets_are_random_and_at_least_128_bits() -> None:
    store = TicketStore()
    tickets = {store.issue(claims(), T0) for _ in range(200)}
    assert len(tickets) == 200
    for ticket in tickets:
        raw = base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4))
        assert len(raw) * 8 >= 128


def test_store_keeps_digests_not_tickets() -> None:
    store = TicketStore()
    ticket = store.issue(claims(), T0)
    keys = list(store._tickets)  # white-box: what a memory dump would show
    assert keys == [hashlib.sha256(ticket.encode()).digest()]
    assert ticket not in repr(store._tickets)


def test_expiry_edge_valid_before_ttl_expired_at_ttl() -> None:
    clock = FakeClock(T0)
    store = TicketStore(ttl=30.0)
    before = store.issue(claims(), clock.now())
    at = store.issue(claims(), clock.now())
    clock.advance(29.999)
    assert store.redeem(before, clock.now()) is not None
    clock.advance(0.001)  # exactly ttl: expired (expiresInMs has elapsed)
    assert store.redeem(at, clock.now()) is None


def test_expired_ticket_is_consumed_by_the_attempt() -> None:
    store = TicketStore(ttl=30.0)
    ticket = store.issue(claims(), T0)
    assert store.redeem(ticket, T0 + 31) is None
    assert len(store) == 0
    # Even with a clock that steps back, the ticket is gone.
    assert store.redeem(ticket, T0) is None


def test_ticket_never_outlives_its_token() -> None:
    store = TicketStore(ttl=30.0)
    ticket = store.issue(claims(exp=T0 + 10), T0)
    assert store.redeem(ticket, T0 + 10) is None
    other = store.issue(claims(exp=T0 + 10), T0)
    assert store.redeem(other, T0 + 9.9) is not None


@pytest.mark.parametrize("bogus", ["", "x", "A" * 32, "A" * 10_000, "é" * 32, "\udcff" * 8])
def test_unknown_tickets(bogus: str) -> None:
    store = TicketStore()
    store.issue(claims(), T0)
    assert store.redeem(bogus, T0) is None
    assert len(store) == 1  # a wrong guess costs the real ticket nothing


def test_max_tickets_refuses_then_recovers_after_expiry() -> None:
    store = TicketStore(ttl=30.0, max_tickets=3)
    for _ in range(3):
        store.issue(claims(), T0)
    with pytest.raises(TicketsExhausted) as info:
        store.issue(claims(), T0 + 29)
    assert isinstance(info.value, PolicyViolation)
    assert info.value.http_status == 503
    assert len(store) == 3
    # Once they expire, issue() makes room by itself.
    ticket = store.issue(claims(), T0 + 30)
    assert len(store) == 1
    assert store.redeem(ticket, T0 + 31) is not None


def test_redeeming_frees_room() -> None:
    store = TicketStore(max_tickets=1)
    ticket = store.issue(claims(), T0)
    assert store.redeem(ticket, T0) is not None
    store.issue(claims(), T0)
    assert len(store) == 1


def test_prune_drops_only_expired_oldest_first() -> None:
    store = TicketStore(ttl=30.0)
    early = [store.issue(claims(), T0) for _ in range(5)]
    late = [store.issue(claims(), T0 + 20) for _ in range(5)]
    store.prune(T0 + 29.9)
    assert len(store) == 10
    store.prune(T0 + 30)
    assert len(store) == 5
    assert all(store.redeem(t, T0 + 31) is None for t in early)
    assert all(store.redeem(t, T0 + 31) is not None for t in late)
    assert len(store) == 0


def test_bad_construction() -> None:
    with pytest.raises(ValueError):
        TicketStore(ttl=0)
    with pytest.raises(ValueError):
        TicketStore(ttl=float("nan"))
    with pytest.raises(ValueError):
        TicketStore(max_tickets=0)
    assert TicketStore(ttl=12.5).ttl == 12.5
