"""IP reputation: a block list file, hot-reloaded, and an optional async provider.

Theory of operation:

* The block list (:class:`~wsguard.core.blocklist.BlockList`, FireHOL netset
  format) is read by :meth:`Reputation.load` at start. :meth:`~Reputation.maybe_reload`
  is cheap enough to call often: at most once per ``reload_interval`` it
  ``stat()``\\s the file, and it reads and parses it only when the
  modification time or the size changed. A new list replaces the old one in
  a single assignment, so a reload in a worker thread is safe.
* A reload never makes things worse: bad lines are skipped (and logged with
  their line numbers), and a file that disappeared or cannot be read keeps
  the previous list (and logs an error).
* The provider is an ``async`` callable asked about an IP that is not on the
  list, for example a call to a reputation service. It runs under
  :func:`asyncio.timeout` and behind a :class:`~wsguard.core.circuit.CircuitBreaker`.
  A provider that is slow, raises, or whose breaker is open counts a failure
  in :attr:`Reputation.provider_failures` and answers "not known to be bad":
  a provider never blocks or refuses a connection by itself. Only its
  explicit ``True`` does.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wsguard.core.blocklist import BlockList
from wsguard.core.circuit import CircuitBreaker, CircuitConfig, CircuitState
from wsguard.core.clock import Clock
from wsguard.exceptions import ConfigurationError

__all__ = ["Reputation", "ReputationConfig", "ReputationProvider"]

ReputationProvider = Callable[[str], Awaitable[bool]]
"""An async callable: ``await provider(ip)`` is True when the IP is known to be bad."""

MAX_PROVIDER_TIMEOUT = 10.0  # a handshake should not wait longer for an opinion
MAX_LOGGED_PROBLEMS = 20  # per load: a corrupt 100,000-line file must not flood the log


def _positive_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@dataclass(frozen=True, kw_only=True)
class ReputationConfig:
    """Settings of the ``[reputation]`` section.

    Args:
        blocklist_file: path of a FireHOL netset file, or None for no list.
        reload_interval: seconds between two checks of the file's mtime.
        provider_timeout: seconds to wait for the provider's answer.

    Raises:
        ConfigurationError: for a value out of range.
    """

    blocklist_file: str | None = None
    reload_interval: float = 5.0
    provider_timeout: float = 0.2

    def __post_init__(self) -> None:
        if self.blocklist_file is not None and (
            not isinstance(self.blocklist_file, str) or not self.blocklist_file.strip()
        ):
            raise ConfigurationError("reputation.blocklist_file", "must be a path or unset")
        if not _positive_number(self.reload_interval):
            raise ConfigurationError("reputation.reload_interval", "must be a number > 0")
        if (
            not _positive_number(self.provider_timeout)
            or self.provider_timeout > MAX_PROVIDER_TIMEOUT
        ):
            raise ConfigurationError(
                "reputation.provider_timeout", f"must be > 0 and <= {MAX_PROVIDER_TIMEOUT:g}"
            )


class Reputation:
    """Decides whether a client IP is known to be bad.

    Args:
        config: the ``[reputation]`` settings.
        clock: the source of time for reload checks and the breaker.
        provider: an optional async reputation lookup.
        breaker: the provider's circuit breaker; by default one named
            ``"reputation_provider"`` with :class:`CircuitConfig` defaults.
        logger: where problems go; default ``wsguard.reputation``.

    Attributes:
        provider_failures: provider calls that timed out or raised, plus
            lookups skipped because the breaker was open; for metrics.
        problems: the problems found by the last load.
    """

    def __init__(
        self,
        config: ReputationConfig,
        clock: Clock,
        provider: ReputationProvider | None = None,
        breaker: CircuitBreaker | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._provider = provider
        if breaker is None:
            breaker = CircuitBreaker(
                "reputation_provider", CircuitConfig(name="reputation_provider"), clock
            )
        self._breaker = breaker
        self._logger = logger if logger is not None else logging.getLogger("wsguard.reputation")
        self._blocklist = BlockList()
        # (mtime_ns, size) of the file last read; None before a successful read.
        self._signature: tuple[int, int] | None = None
        self._last_check: float | None = None
        self._unreadable = False  # log a missing file once, not at every check
        self.provider_failures = 0
        self.problems: list[str] = []

    # The block list.

    def load(self) -> list[str]:
        """Read and parse the block list file now.

        Call it once at start; :meth:`maybe_reload` calls it when the file
        changes. Parsing 100,000 lines takes a fraction of a second: from an
        event loop, prefer ``await asyncio.to_thread(reputation.load)``.

        Returns:
            The problems: one ``"path:LINE: bad entry"`` per skipped line,
            or one ``"path: cannot read (...)"`` when the file cannot be read,
            in which case the previous list is kept. Each is logged too.
        """
        path = self._config.blocklist_file
        self._last_check = self._clock.now()
        if path is None:
            self.problems = []
            return []
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                # fstat on the open file: the signature matches what is read.
                stat = os.fstat(file.fileno())
                text = file.read()
        except OSError as exc:
            problem = f"{path}: cannot read ({type(exc).__name__}); keeping the previous list"
            self._logger.error("block list %s", problem)
            self._unreadable = True
            self.problems = [problem]
            return [problem]
        blocklist, problems = BlockList.parse(text, source=path)
        self._blocklist = blocklist
        self._signature = (stat.st_mtime_ns, stat.st_size)
        self._unreadable = False
        for problem in problems[:MAX_LOGGED_PROBLEMS]:
            self._logger.warning("block list %s, line skipped", problem)
        if len(problems) > MAX_LOGGED_PROBLEMS:
            self._logger.warning(
                "block list %s: %d more bad lines skipped",
                path,
                len(problems) - MAX_LOGGED_PROBLEMS,
            )
        self._logger.info("block list %s loaded: %d ranges", path, len(blocklist))
        self.problems = problems
        return problems

    def maybe_reload(self) -> None:
        """Reload the file if it changed; cheap enough for every handshake.

        At most once per ``reload_interval`` (by the injected clock) it calls
        ``os.stat()``; it reads the file only when its mtime or size changed
        since the last read. A missing or unreadable file keeps the list.
        """
        path = self._config.blocklist_file
        if path is None:
            return
        now = self._clock.now()
        if self._last_check is not None and now - self._last_check < self._config.reload_interval:
            return
        self._last_check = now
        try:
            stat = os.stat(path)
        except OSError as exc:
            if not self._unreadable:
                self._logger.error(
                    "block list %s: cannot stat (%s); keeping the previous list",
                    path,
                    type(exc).__name__,
                )
                self._unreadable = True
            return
        if (stat.st_mtime_ns, stat.st_size) != self._signature:
            self.load()

    def blocked_locally(self, ip: str) -> bool:
        """Whether ``ip`` is on the block list; no provider, no I/O."""
        return ip in self._blocklist

    @property
    def blocklist(self) -> BlockList:
        """The block list in use."""
        return self._blocklist

    # The provider.

    async def is_bad(self, ip: str) -> bool:
        """Whether ``ip`` is known to be bad: on the list, or so says the provider.

        The provider is asked only when the IP is not on the list and the
        breaker allows it, and is given ``provider_timeout`` seconds.

        Returns:
            True when the list has the IP or the provider answered True;
            False otherwise, including when the provider timed out, raised,
            or was skipped because its breaker is open.
        """
        if ip in self._blocklist:
            return True
        provider = self._provider
        if provider is None:
            return False
        if not self._breaker.allow():
            self.provider_failures += 1
            return False
        try:
            async with asyncio.timeout(self._config.provider_timeout):
                answer = await provider(ip)
        except TimeoutError:
            self._provider_failed("timed out")
            return False
        except Exception as exc:
            # Fail open on purpose, for this one signal: the provider is an
            # opinion, and the other defenses still apply to this client.
            self._provider_failed(type(exc).__name__)
            return False
        self._breaker.record_success()
        return answer is True

    @property
    def breaker_state(self) -> CircuitState:
        """The provider's circuit breaker state, for /readyz and metrics."""
        return self._breaker.state

    @property
    def breaker(self) -> CircuitBreaker:
        """The provider's circuit breaker."""
        return self._breaker

    def _provider_failed(self, reason: str) -> None:
        self.provider_failures += 1
        self._breaker.record_failure()
        # The IP is not logged here: the caller's audit event has it, hashed.
        self._logger.warning(
            "reputation provider failed (%s); breaker %s", reason, self._breaker.state.value
        )
