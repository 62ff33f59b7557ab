"""Bans: escalation, expiry, unban, and bounded memory."""

from __future__ import annotations

import math
from typing import Any

import pytest

from wsguard.core.bans import Ban, BanConfig, BanList
from wsguard.exceptions import ConfigurationError

NOW = 1_764_400_000.0
DAY = 86_400.0


@pytest.mark.parametrize(
    ("field", "value"), [("base", 0.0), ("max", -1.0), ("memory", math.inf), ("base", "60")]
)
def test_config_refuses_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        BanConfig(**{field: value})
    assert info.value.setting == f"bans.{field}"


def test_config_refuses_max_below_base() -> None:
    with pytest.raises(ConfigurationError) as info:
        BanConfig(base=120.0, max=60.0)
    assert info.value.setting == "bans.max"


def test_first_ban_and_expiry() -> None:
    bans = BanList(BanConfig())
    ban = bans.ban("ip", "192.0.2.1", NOW, "rate limit abuse")
    assert ban == Ban(
        key="192.0.2.1", kind="ip", until=NOW + 60.0, reason="rate limit abuse", count=1
    )
    assert bans.banned("ip", "192.0.2.1", NOW + 59.9) == ban
    assert bans.banned("user", "192.0.2.1", NOW) is None  # kinds are separate
    assert bans.banned("ip", "192.0.2.2", NOW) is None
    assert bans.banned("ip", "192.0.2.1", NOW + 60.0) is None


def test_escalation_doubles_and_caps() -> None:
    bans = BanList(BanConfig())
    t = NOW
    durations = []
    for _ in range(13):
        ban = bans.ban("user", "alice", t, "flood")
        durations.append(ban.until - t)
        t = ban.until + 10.0  # offends again soon after release
    assert durations == [60.0 * 2**i for i in range(11)] + [DAY, DAY]
    assert durations[:4] == [60.0, 120.0, 240.0, 480.0]
    assert ban.count == 13


def test_escalation_resets_after_memory() -> None:
    bans = BanList(BanConfig())
    first = bans.ban("ip", "192.0.2.1", NOW, "flood")
    second = bans.ban("ip", "192.0.2.1", first.until + DAY, "flood")  # just within memory
    assert (second.count, second.until - second.until + 120.0) == (2, 120.0)
    assert second.until == first.until + DAY + 120.0
    third = bans.ban("ip", "192.0.2.1", second.until + DAY + 1.0, "flood")
    assert third.count == 1
    assert third.until == second.until + DAY + 1.0 + 60.0


def test_ban_while_banned_does_not_escalate() -> None:
    bans = BanList(BanConfig())
    first = bans.ban("user", "alice", NOW, "flood")
    # Her other tabs are closed for the same flood a moment later.
    assert bans.ban("user", "alice", NOW + 1.0, "flood") is first
    assert bans.ban("user", "alice", NOW + 2.0, "flood") is first
    again = bans.ban("user", "alice", first.until + 1.0, "flood")
    assert again.count == 2


def test_explicit_duration() -> None:
    bans = BanList(BanConfig())
    ban = bans.ban("ip", "192.0.2.1", NOW, "admin", duration=3600.0)
    assert (ban.until, ban.count) == (NOW + 3600.0, 1)
    # An explicit duration replaces a current ban, even to shorten it.
    shorter = bans.ban("ip", "192.0.2.1", NOW + 1.0, "admin", duration=10.0)
    assert (shorter.until, shorter.count) == (NOW + 11.0, 1)
    forever = bans.ban("ip", "192.0.2.9", NOW, "admin", duration=math.inf)
    assert bans.banned("ip", "192.0.2.9", NOW + 100 * DAY) == forever


@pytest.mark.parametrize(
    ("kind", "duration"), [("host", None), ("ip", 0.0), ("ip", -5.0), ("ip", math.nan)]
)
def test_ban_refuses_bad_arguments(kind: str, duration: float | None) -> None:
    with pytest.raises(ValueError):
        BanList(BanConfig()).ban(kind, "k", NOW, "r", duration)


def test_unban_lifts_and_forgets() -> None:
    bans = BanList(BanConfig())
    bans.ban("ip", "192.0.2.1", NOW, "flood")
    assert bans.unban("ip", "192.0.2.1") is True
    assert bans.banned("ip", "192.0.2.1", NOW) is None
    assert bans.unban("ip", "192.0.2.1") is False
    assert bans.ban("ip", "192.0.2.1", NOW + 1.0, "flood").count == 1


def test_list_shows_active_bans_only_in_order() -> None:
    bans = BanList(BanConfig())
    bans.ban("ip", "a", NOW, "r", duration=300.0)
    bans.ban("user", "b", NOW, "r", duration=100.0)
    bans.ban("ip", "c", NOW, "r", duration=10.0)
    assert [b.key for b in bans.list(NOW)] == ["c", "b", "a"]
    assert [b.key for b in bans.list(NOW + 200.0)] == ["a"]
    assert len(bans) == 3  # the expired ones are still remembered for escalation


def test_prune_keeps_memory_bounded() -> None:
    bans = BanList(BanConfig(memory=3600.0))
    for i in range(10_000):
        bans.ban("ip", f"10.0.{i // 256}.{i % 256}", NOW + i * 0.01, "flood")
    bans.ban("user", "mallory", NOW + 200.0, "flood", duration=DAY)
    assert len(bans) == 10_001
    bans.prune(NOW + 60.0 + 100.0 + 3600.0 + 1.0)
    assert len(bans) == 1
    assert bans.banned("user", "mallory", NOW + 3800.0) is not None


def test_banned_drops_entries_past_memory_lazily() -> None:
    bans = BanList(BanConfig(memory=100.0))
    bans.ban("ip", "a", NOW, "r")
    assert bans.banned("ip", "a", NOW + 61.0) is None
    assert len(bans) == 1  # within memory: kept for escalation
    assert bans.banned("ip", "a", NOW + 60.0 + 101.0) is None
    assert len(bans) == 0


def test_ban_is_immutable() -> None:
    ban = BanList(BanConfig()).ban("ip", "a", NOW, "r")
    with pytest.raises(AttributeError):
        ban.until = 0.0  # type: ignore[misc]
