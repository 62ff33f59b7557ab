"""Anomaly scores and credential stuffing detection.

Theory of operation:

* Suspicious events (an invalid message, a CSRF failure, a signature match ...)
  add a configured weight to a score that decays exponentially with a
  half-life: ``score * 0.5 ** (dt / half_life)``. The decay is applied lazily,
  when the score is next read or added to, so a score is two floats and
  costs nothing between events. A burst of events crosses a threshold; the
  same events spread over hours never do.
* :class:`AnomalyScorer` is one connection's score and its level: ``"restrict"``
  from ``restrict_threshold`` (only exempt types pass), ``"disconnect"`` from
  ``disconnect_threshold`` (close 4429 and ban).
* :class:`IpScores` keeps a score per IP for what happens before a connection
  exists (failed handshakes). It is bounded: least recently used entries are
  evicted past ``max_entries``, and :meth:`IpScores.prune` drops scores that
  have decayed below 1.
* :class:`CredentialStuffingDetector` watches failed authentications per IP:
  too many failures, or too many distinct subjects, inside ``stuffing_window``.
  Subjects are kept only as 8-byte keyed BLAKE2b digests with a key drawn per
  detector, so the memory never holds a user name and the digests cannot be
  matched against a list of known names after the process ends.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from wsguard.exceptions import ConfigurationError

SUBJECT_DIGEST_CACHE = 4096  # subjects whose digest is remembered per detector


def subject_digest(subject: str, key: bytes) -> bytes:
    """The 8-byte keyed BLAKE2b digest under which a subject is counted."""
    # surrogatepass: the unverified ``sub`` may hold a lone surrogate.
    data = subject.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=8, key=key).digest()


__all__ = [
    "DEFAULT_WEIGHTS",
    "AnomalyConfig",
    "AnomalyEvent",
    "AnomalyScorer",
    "CredentialStuffingDetector",
    "DecayingScore",
    "IpScores",
    "Level",
]

Level = Literal["ok", "restrict", "disconnect"]


class AnomalyEvent(enum.StrEnum):
    """The events that add to an anomaly score."""

    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    CSRF_FAILURE = "csrf_failure"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    SIGNATURE_MATCH = "signature_match"
    AUTH_FAILURE = "auth_failure"
    INVALID_PAYLOAD = "invalid_payload"
    TOKEN_INVALID = "token_invalid"


DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        AnomalyEvent.INVALID_MESSAGE.value: 10.0,
        AnomalyEvent.UNKNOWN_TYPE.value: 10.0,
        AnomalyEvent.CSRF_FAILURE.value: 20.0,
        AnomalyEvent.FORBIDDEN.value: 15.0,
        AnomalyEvent.RATE_LIMITED.value: 5.0,
        AnomalyEvent.SIGNATURE_MATCH.value: 25.0,
        AnomalyEvent.AUTH_FAILURE.value: 10.0,
        AnomalyEvent.INVALID_PAYLOAD.value: 5.0,
        AnomalyEvent.TOKEN_INVALID.value: 20.0,
    }
)
"""The weight of each event in the default configuration."""


def _default_weights() -> Mapping[str, float]:
    return DEFAULT_WEIGHTS


def _is_positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@dataclass(frozen=True, kw_only=True)
class AnomalyConfig:
    """Anomaly scoring and credential stuffing settings.

    Attributes:
        half_life: seconds for a score to halve.
        restrict_threshold: from this score only exempt types pass.
        disconnect_threshold: from this score the connection is closed (4429)
            and its IP and user banned.
        weights: the weight of each event. Events left out keep their default
            weight; a weight of 0 ignores the event.
        stuffing_failures: failed authentications from one IP inside
            ``stuffing_window`` that make it suspected.
        stuffing_subjects: distinct subjects tried from one IP inside
            ``stuffing_window`` (failures and successes) that make it suspected.
        stuffing_window: seconds.
    """

    half_life: float = 60.0
    restrict_threshold: float = 50.0
    disconnect_threshold: float = 100.0
    weights: Mapping[str, float] = field(default_factory=_default_weights)
    stuffing_failures: int = 10
    stuffing_subjects: int = 5
    stuffing_window: float = 300.0

    def __post_init__(self) -> None:
        for name in ("half_life", "restrict_threshold", "disconnect_threshold", "stuffing_window"):
            if not _is_positive(getattr(self, name)):
                raise ConfigurationError(f"anomaly.{name}", "must be a positive finite number")
        if self.disconnect_threshold < self.restrict_threshold:
            raise ConfigurationError(
                "anomaly.disconnect_threshold", "must be at least restrict_threshold"
            )
        for name in ("stuffing_failures", "stuffing_subjects"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"anomaly.{name}", "must be an integer of at least 1")
        merged = dict(DEFAULT_WEIGHTS)
        for event, weight in self.weights.items():
            if event not in merged:
                raise ConfigurationError("anomaly.weights", f"unknown event {event!r}")
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
                raise ConfigurationError(
                    "anomaly.weights", f"{event}: must be a finite number of at least 0"
                )
            merged[str(event)] = float(weight)
        # Frozen: replace the caller's mapping by a read-only copy of the merged one.
        object.__setattr__(self, "weights", MappingProxyType(merged))


class DecayingScore:
    """A score that halves every ``half_life`` seconds.

    Args:
        half_life: seconds.
    """

    __slots__ = ("half_life", "score", "updated_at")

    def __init__(self, half_life: float) -> None:
        self.half_life = half_life
        self.score = 0.0
        self.updated_at = 0.0

    def value(self, now: float) -> float:
        """The score at ``now``."""
        score = self.score
        if score == 0.0:
            return 0.0
        elapsed = now - self.updated_at
        if elapsed <= 0.0:  # a clock step backwards never grows a score
            return score
        return score * math.exp2(-elapsed / self.half_life)

    def add(self, weight: float, now: float) -> float:
        """Add ``weight`` at ``now``; returns the new score."""
        score = self.value(now) + weight
        self.score = score
        if now > self.updated_at:
            self.updated_at = now
        return score


class AnomalyScorer:
    """The anomaly score of one connection (or of anything else, such as an IP).

    Args:
        config: the anomaly settings.
    """

    __slots__ = ("_disconnect", "_restrict", "_score", "_weights")

    def __init__(self, config: AnomalyConfig) -> None:
        self._weights = config.weights
        self._restrict = config.restrict_threshold
        self._disconnect = config.disconnect_threshold
        self._score = DecayingScore(config.half_life)

    def record(self, event: AnomalyEvent, now: float) -> float:
        """Add the weight of ``event``; returns the new score."""
        return self._score.add(self._weights[event], now)

    def value(self, now: float) -> float:
        """The score at ``now``."""
        return self._score.value(now)

    def level(self, now: float) -> Level:
        """``"disconnect"``, ``"restrict"`` or ``"ok"``, by the score at ``now``."""
        score = self._score.value(now)
        if score >= self._disconnect:
            return "disconnect"
        if score >= self._restrict:
            return "restrict"
        return "ok"


class IpScores:
    """Anomaly scores per IP key, bounded in memory.

    Args:
        config: the anomaly settings.
        max_entries: keys kept at most; the least recently updated is evicted.
    """

    __slots__ = ("_config", "_max", "_scores")

    def __init__(self, config: AnomalyConfig, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._config = config
        self._max = max_entries
        # Insertion order is recency order: an update moves a key to the end.
        self._scores: dict[str, DecayingScore] = {}

    def record(self, ip_key: str, event: AnomalyEvent, now: float) -> float:
        """Add the weight of ``event`` to ``ip_key``'s score; returns the new score."""
        scores = self._scores
        score = scores.pop(ip_key, None)
        if score is None:
            score = DecayingScore(self._config.half_life)
            if len(scores) >= self._max:
                del scores[next(iter(scores))]
        scores[ip_key] = score
        return score.add(self._config.weights[event], now)

    def value(self, ip_key: str, now: float) -> float:
        """``ip_key``'s score at ``now``; 0 for an unknown key."""
        score = self._scores.get(ip_key)
        return 0.0 if score is None else score.value(now)

    def level(self, ip_key: str, now: float) -> Level:
        """``"disconnect"``, ``"restrict"`` or ``"ok"``, by ``ip_key``'s score."""
        value = self.value(ip_key, now)
        if value >= self._config.disconnect_threshold:
            return "disconnect"
        if value >= self._config.restrict_threshold:
            return "restrict"
        return "ok"

    def forget(self, ip_key: str) -> None:
        """Drop ``ip_key``'s score (after banning it, for example)."""
        self._scores.pop(ip_key, None)

    def prune(self, now: float) -> None:
        """Drop the scores that have decayed below 1."""
        stale = [key for key, score in self._scores.items() if score.value(now) < 1.0]
        for key in stale:
            del self._scores[key]

    def __len__(self) -> int:
        return len(self._scores)


class _StuffingRecord:
    """What one IP has tried recently."""

    __slots__ = ("failures", "last", "subjects")

    def __init__(self, max_failures: int) -> None:
        self.failures: deque[float] = deque(maxlen=max_failures)
        self.subjects: dict[bytes, float] = {}  # digest -> last seen
        self.last = -math.inf


class CredentialStuffingDetector:
    """Failed authentications and distinct subjects per IP, in a window.

    An IP is suspected when, inside ``stuffing_window``, it has
    ``stuffing_failures`` failed authentications, or has tried
    ``stuffing_subjects`` distinct subjects (successful ones included: an
    attacker holding a list of valid passwords succeeds with many accounts).
    Only a failure can make an IP suspected, so a shared address (an office
    behind NAT) is not suspected for its users' successful sign-ins alone.

    When :meth:`failure` returns True the IP's record is cleared: the caller bans
    it, and a new offence after the ban is a new detection.

    Args:
        config: the anomaly settings.
        max_ips: IPs tracked at most; the least recently active is evicted.
        key: the BLAKE2b key for subject digests; random by default.
    """

    __slots__ = ("_digest", "_failures", "_key", "_max_ips", "_records", "_subjects", "_window")

    def __init__(
        self, config: AnomalyConfig, max_ips: int = 100_000, key: bytes | None = None
    ) -> None:
        if max_ips < 1:
            raise ValueError("max_ips must be at least 1")
        self._failures = config.stuffing_failures
        self._subjects = config.stuffing_subjects
        self._window = config.stuffing_window
        self._max_ips = max_ips
        self._key = secrets.token_bytes(16) if key is None else key
        self._records: dict[str, _StuffingRecord] = {}
        # Keyed BLAKE2b costs about 0.7 us a call here; the same users sign in
        # again and again. Bounded, so that a spray of subjects cannot grow it.
        self._digest = functools.lru_cache(maxsize=SUBJECT_DIGEST_CACHE)(
            functools.partial(subject_digest, key=self._key)
        )

    def _record(self, ip_key: str, now: float) -> _StuffingRecord:
        records = self._records
        record = records.pop(ip_key, None)
        if record is None:
            record = _StuffingRecord(self._failures)
            if len(records) >= self._max_ips:
                del records[next(iter(records))]
        records[ip_key] = record  # most recently active last
        if now > record.last:
            record.last = now
        return record

    def _add_subject(self, record: _StuffingRecord, subject: str, now: float) -> int:
        subjects = record.subjects
        cutoff = now - self._window
        for digest in [d for d, seen in subjects.items() if seen <= cutoff]:
            del subjects[digest]
        digest = self._digest(subject)
        if digest not in subjects and len(subjects) >= self._subjects:
            # Already at the threshold: keep the memory at ``stuffing_subjects``.
            del subjects[min(subjects, key=subjects.__getitem__)]
        subjects[digest] = now
        return len(subjects)

    def failure(self, ip_key: str, subject: str | None, now: float) -> bool:
        """Record a failed authentication from ``ip_key``.

        Args:
            ip_key: the client's rate key.
            subject: the unverified ``sub`` if one could be read, else ``None``.
            now: the current time, seconds.

        Returns:
            True when this failure makes the IP suspected (ban it and raise
            ``credential_stuffing_suspected``); its record is then cleared.
        """
        record = self._record(ip_key, now)
        failures = record.failures
        failures.append(now)
        cutoff = now - self._window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        suspected = len(failures) >= self._failures
        if subject is not None and self._add_subject(record, subject, now) >= self._subjects:
            suspected = True
        if suspected:
            del self._records[ip_key]
        return suspected

    def success(self, ip_key: str, subject: str, now: float) -> None:
        """Record a successful authentication: it counts as a distinct subject."""
        self._add_subject(self._record(ip_key, now), subject, now)

    def prune(self, now: float) -> None:
        """Forget IPs with no activity inside the window."""
        cutoff = now - self._window
        stale = [ip for ip, record in self._records.items() if record.last <= cutoff]
        for ip in stale:
            del self._records[ip]

    def __len__(self) -> int:
        return len(self._records)
