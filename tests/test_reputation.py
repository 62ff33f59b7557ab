"""Tests for IP reputation: block list hot reload, and the provider behind a breaker."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from wsguard.core.circuit import CircuitBreaker, CircuitConfig, CircuitState
from wsguard.core.clock import FakeClock
from wsguard.exceptions import ConfigurationError
from wsguard.reputation import Reputation, ReputationConfig


def bump_mtime(path: Path) -> None:
    """Move the file's mtime forward, as a new write would on a coarse clock."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def make(path: Path | None = None, **kwargs: object) -> tuple[Reputation, FakeClock]:
    clock = FakeClock()
    config = ReputationConfig(
        blocklist_file=None if path is None else str(path), reload_interval=5.0
    )
    return Reputation(config, clock, **kwargs), clock  # type: ignore[arg-type]


# The block list.


def test_load_and_lookup(tmp_path: Path) -> None:
    """The file is loaded at start and used by both lookups."""
    path = tmp_path / "block.netset"
    path.write_text("# list\n192.0.2.0/24\n")
    reputation, _ = make(path)
    assert reputation.load() == []
    assert reputation.blocked_locally("192.0.2.7")
    assert not reputation.blocked_locally("198.51.100.1")


async def test_is_bad_uses_the_block_list(tmp_path: Path) -> None:
    """A listed IP is bad without asking any provider."""
    path = tmp_path / "block.netset"
    path.write_text("192.0.2.0/24\n")
    reputation, _ = make(path)
    reputation.load()
    assert await reputation.is_bad("192.0.2.1")
    assert not await reputation.is_bad("198.51.100.1")


def test_hot_reload(tmp_path: Path) -> None:
    """A changed file is picked up once reload_interval has passed."""
    path = tmp_path / "block.netset"
    path.write_text("192.0.2.1\n")
    reputation, clock = make(path)
    reputation.load()
    assert not reputation.blocked_locally("198.51.100.9")

    path.write_text("192.0.2.1\n198.51.100.9\n")
    bump_mtime(path)
    reputation.maybe_reload()  # too soon: not even a stat
    assert not reputation.blocked_locally("198.51.100.9")

    clock.advance(5.0)
    reputation.maybe_reload()
    assert reputation.blocked_locally("198.51.100.9")
    assert reputation.blocked_locally("192.0.2.1")


def test_unchanged_file_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """maybe_reload only stats the file when mtime and size are unchanged."""
    path = tmp_path / "block.netset"
    path.write_text("192.0.2.1\n")
    reputation, clock = make(path)
    reputation.load()
    loads: list[int] = []
    original = reputation.load

    def counting_load() -> list[str]:
        loads.append(1)
        return original()

    monkeypatch.setattr(reputation, "load", counting_load)
    for _ in range(3):
        clock.advance(5.0)
        reputation.maybe_reload()
    assert loads == []


def test_bad_line_is_reported_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bad line is logged with its line number; the good lines still load."""
    path = tmp_path / "block.netset"
    path.write_text("192.0.2.1\n# comment\nbogus\n198.51.100.0/24\n")
    reputation, _ = make(path)
    with caplog.at_level(logging.WARNING, logger="wsguard.reputation"):
        problems = reputation.load()
    assert problems == [f"{path}:3: bad entry"]
    assert reputation.problems == problems
    assert f"{path}:3: bad entry" in caplog.text
    assert reputation.blocked_locally("198.51.100.5")


def test_bad_line_on_reload_does_not_crash(tmp_path: Path) -> None:
    """A reload with a bad line keeps going and applies the good lines."""
    path = tmp_path / "block.netset"
    path.write_text("192.0.2.1\n")
    reputation, clock = make(path)
    reputation.load()
    path.write_text("192.0.2.1\n999.1.1.1\n203.0.113.0/24\n")
    bump_mtime(path)
    clock.advance(5.0)
    reputation.maybe_reload()
    assert reputation.problems == [f"{path}:2: bad entry"]
    assert reputation.blocked_locally("203.0.113.4")


def test_missing_file_on_reload_keeps_the_old_list(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A deleted file keeps the previous list and logs one error."""
    path = tmp_path / "block.netset"
    path.write_text("192.0.2.1\n")
    reputation, clock = make(path)
    reputation.load()
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="wsguard.reputation"):
        for _ in range(3):
            clock.advance(5.0)
            reputation.maybe_reload()
        problems = reputation.load()
    assert reputation.blocked_locally("192.0.2.1")
    assert problems and "cannot read" in problems[0]
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 2  # one for the reload checks, one for the explicit load

    path.write_text("198.51.100.1\n")  # it comes back: loaded at the next check
    clock.advance(5.0)
    reputation.maybe_reload()
    assert reputation.blocked_locally("198.51.100.1")
    assert not reputation.blocked_locally("192.0.2.1")


def test_missing_file_at_start_blocks_nothing(tmp_path: Path) -> None:
    """A file missing at start is reported; the list is empty, nothing crashes."""
    reputation, _ = make(tmp_path / "absent.netset")
    problems = reputation.load()
    assert len(problems) == 1
    assert not reputation.blocked_locally("192.0.2.1")


def test_no_file_configured() -> None:
    """Without a file, load and maybe_reload do nothing."""
    reputation, _ = make(None)
    assert reputation.load() == []
    reputation.maybe_reload()
    assert not reputation.blocked_locally("192.0.2.1")


# The provider.


async def test_provider_that_says_true_blocks() -> None:
    """The provider's True makes the IP bad."""
    asked: list[str] = []

    async def provider(ip: str) -> bool:
        asked.append(ip)
        return ip == "203.0.113.66"

    reputation, _ = make(None, provider=provider)
    assert await reputation.is_bad("203.0.113.66")
    assert not await reputation.is_bad("203.0.113.67")
    assert asked == ["203.0.113.66", "203.0.113.67"]
    assert reputation.provider_failures == 0
    assert reputation.breaker_state is CircuitState.CLOSED


async def test_listed_ip_does_not_ask_the_provider(tmp_path: Path) -> None:
    """The local list answers first; the provider is not called."""
    path = tmp_path / "block.netset"
    path.write_text("192.0.2.1\n")
    calls: list[str] = []

    async def provider(ip: str) -> bool:
        calls.append(ip)
        return False

    reputation, _ = make(path, provider=provider)
    reputation.load()
    assert await reputation.is_bad("192.0.2.1")
    assert calls == []


async def test_slow_provider_times_out_and_does_not_block() -> None:
    """A provider slower than provider_timeout counts a failure and answers False."""

    async def slow(ip: str) -> bool:
        await asyncio.sleep(1)
        return True

    clock = FakeClock()
    config = ReputationConfig(provider_timeout=0.05)
    reputation = Reputation(config, clock, provider=slow)
    async with asyncio.timeout(2):  # a bound, not a precise timing
        assert not await reputation.is_bad("203.0.113.1")
    assert reputation.provider_failures == 1
    assert reputation.breaker.failures == 1


async def test_failing_provider_opens_the_breaker_and_is_not_called() -> None:
    """After failure_threshold errors the provider is skipped until the reset timeout."""
    calls: list[str] = []

    async def failing(ip: str) -> bool:
        calls.append(ip)
        raise ConnectionError("service down")

    clock = FakeClock()
    breaker = CircuitBreaker(
        "reputation_provider", CircuitConfig(failure_threshold=3, reset_timeout=30), clock
    )
    reputation = Reputation(ReputationConfig(), clock, provider=failing, breaker=breaker)
    for _ in range(3):
        assert not await reputation.is_bad("203.0.113.1")
    assert len(calls) == 3
    assert reputation.breaker_state is CircuitState.OPEN

    for _ in range(5):
        assert not await reputation.is_bad("203.0.113.1")
    assert len(calls) == 3  # not called while open
    assert reputation.provider_failures == 8

    clock.advance(30)
    assert not await reputation.is_bad("203.0.113.1")  # one trial, fails again
    assert len(calls) == 4
    assert reputation.breaker_state is CircuitState.OPEN


async def test_provider_recovers_through_half_open() -> None:
    """A successful trial closes the breaker again."""
    healthy = False

    async def flaky(ip: str) -> bool:
        if not healthy:
            raise OSError("down")
        return True

    clock = FakeClock()
    breaker = CircuitBreaker("p", CircuitConfig(failure_threshold=1, reset_timeout=10), clock)
    reputation = Reputation(ReputationConfig(), clock, provider=flaky, breaker=breaker)
    assert not await reputation.is_bad("203.0.113.1")
    assert reputation.breaker_state is CircuitState.OPEN
    healthy = True
    clock.advance(10)
    assert await reputation.is_bad("203.0.113.1")
    assert reputation.breaker_state is CircuitState.CLOSED


async def test_non_boolean_answer_is_not_bad() -> None:
    """Only an explicit True blocks; a truthy non-bool (a bug) does not."""

    async def sloppy(ip: str) -> bool:
        return "yes"  # type: ignore[return-value]

    reputation, _ = make(None, provider=sloppy)
    assert not await reputation.is_bad("203.0.113.1")


async def test_cancellation_is_not_swallowed() -> None:
    """Cancelling the caller cancels the lookup; it is not turned into False."""
    started = asyncio.Event()

    async def hanging(ip: str) -> bool:
        started.set()
        await asyncio.sleep(10)
        return False

    clock = FakeClock()
    reputation = Reputation(ReputationConfig(provider_timeout=5), clock, provider=hanging)
    task = asyncio.create_task(reputation.is_bad("203.0.113.1"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# Config.


def test_config_defaults() -> None:
    """No file, 5 s reload checks, 200 ms provider timeout."""
    config = ReputationConfig()
    assert (config.blocklist_file, config.reload_interval, config.provider_timeout) == (
        None,
        5.0,
        0.2,
    )


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"blocklist_file": ""}, "reputation.blocklist_file"),
        ({"reload_interval": 0}, "reputation.reload_interval"),
        ({"reload_interval": float("nan")}, "reputation.reload_interval"),
        ({"provider_timeout": 0}, "reputation.provider_timeout"),
        ({"provider_timeout": 60}, "reputation.provider_timeout"),
        ({"provider_timeout": True}, "reputation.provider_timeout"),
    ],
)
def test_config_refuses_bad_values(settings: dict[str, object], setting: str) -> None:
    """Each bad value names its setting."""
    with pytest.raises(ConfigurationError) as caught:
        ReputationConfig(**settings)  # type: ignore[arg-type]
    assert caught.value.setting == setting
