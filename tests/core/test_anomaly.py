"""Anomaly scores: decay, thresholds, per-IP bounds, and credential stuffing detection."""

from __future__ import annotations

import math
from typing import Any

import pytest

from wsguard.core.anomaly import (
    DEFAULT_WEIGHTS,
    SUBJECT_DIGEST_CACHE,
    AnomalyConfig,
    AnomalyEvent,
    AnomalyScorer,
    CredentialStuffingDetector,
    DecayingScore,
    IpScores,
    subject_digest,
)
from wsguard.exceptions import ConfigurationError

NOW = 1_764_400_000.0


# Config.


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("half_life", 0.0),
        ("restrict_threshold", -1.0),
        ("disconnect_threshold", math.nan),
        ("stuffing_window", math.inf),
        ("stuffing_failures", 0),
        ("stuffing_subjects", 2.5),
    ],
)
def test_config_refuses_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        AnomalyConfig(**{field: value})
    assert info.value.setting == f"anomaly.{field}"


def test_config_refuses_disconnect_below_restrict() -> None:
    with pytest.raises(ConfigurationError) as info:
        AnomalyConfig(restrict_threshold=80.0, disconnect_threshold=60.0)
    assert info.value.setting == "anomaly.disconnect_threshold"


@pytest.mark.parametrize("weights", [{"no_such_event": 1.0}, {"forbidden": -1.0}])
def test_config_refuses_bad_weights(weights: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError) as info:
        AnomalyConfig(weights=weights)
    assert info.value.setting == "anomaly.weights"


def test_config_weights_default_and_merge() -> None:
    assert dict(AnomalyConfig().weights) == dict(DEFAULT_WEIGHTS)
    assert set(DEFAULT_WEIGHTS) == {event.value for event in AnomalyEvent}
    assert DEFAULT_WEIGHTS["csrf_failure"] == 20.0
    given = {"forbidden": 30.0}
    config = AnomalyConfig(weights=given)
    assert config.weights["forbidden"] == 30.0
    assert config.weights["csrf_failure"] == 20.0  # left out: default kept
    given["forbidden"] = 0.0  # the config holds its own read-only copy
    assert config.weights["forbidden"] == 30.0
    with pytest.raises(TypeError):
        config.weights["forbidden"] = 1.0  # type: ignore[index]


# Scores.


def test_score_halves_every_half_life() -> None:
    score = DecayingScore(60.0)
    assert score.value(NOW) == 0.0
    assert score.add(100.0, NOW) == 100.0
    assert score.value(NOW + 60.0) == pytest.approx(50.0)
    assert score.value(NOW + 120.0) == pytest.approx(25.0)
    assert score.add(10.0, NOW + 60.0) == pytest.approx(60.0)
    assert score.value(NOW + 120.0) == pytest.approx(30.0)


def test_score_clock_step_backwards_does_not_grow() -> None:
    score = DecayingScore(60.0)
    score.add(10.0, NOW)
    assert score.value(NOW - 600.0) == 10.0


def test_scorer_levels() -> None:
    scorer = AnomalyScorer(AnomalyConfig())
    assert scorer.level(NOW) == "ok"
    scorer.record(AnomalyEvent.SIGNATURE_MATCH, NOW)  # 25
    scorer.record(AnomalyEvent.CSRF_FAILURE, NOW)  # 45
    assert scorer.level(NOW) == "ok"
    assert scorer.record(AnomalyEvent.RATE_LIMITED, NOW) == pytest.approx(50.0)
    assert scorer.level(NOW) == "restrict"
    for _ in range(2):
        scorer.record(AnomalyEvent.SIGNATURE_MATCH, NOW)
    assert scorer.value(NOW) == pytest.approx(100.0)
    assert scorer.level(NOW) == "disconnect"
    assert scorer.level(NOW + 60.0) == "restrict"  # 50 after one half-life
    assert scorer.level(NOW + 61.0) == "ok"


def test_scorer_spread_out_events_never_cross() -> None:
    scorer = AnomalyScorer(AnomalyConfig())
    t = NOW
    for _ in range(1000):  # one invalid message every 2 minutes for 33 hours
        scorer.record(AnomalyEvent.INVALID_MESSAGE, t)
        assert scorer.level(t) == "ok"
        t += 120.0


def test_scorer_uses_configured_weights() -> None:
    scorer = AnomalyScorer(AnomalyConfig(weights={"unknown_type": 0.0, "forbidden": 60.0}))
    assert scorer.record(AnomalyEvent.UNKNOWN_TYPE, NOW) == 0.0
    assert scorer.record(AnomalyEvent.FORBIDDEN, NOW) == 60.0
    assert scorer.level(NOW) == "restrict"


def test_ip_scores_record_value_level() -> None:
    scores = IpScores(AnomalyConfig())
    for _ in range(5):
        scores.record("192.0.2.1", AnomalyEvent.AUTH_FAILURE, NOW)
    assert scores.value("192.0.2.1", NOW) == pytest.approx(50.0)
    assert scores.level("192.0.2.1", NOW) == "restrict"
    assert scores.value("192.0.2.2", NOW) == 0.0
    assert scores.level("192.0.2.2", NOW) == "ok"
    scores.forget("192.0.2.1")
    assert len(scores) == 0


def test_ip_scores_bounded_by_lru() -> None:
    scores = IpScores(AnomalyConfig(), max_entries=100)
    scores.record("keep", AnomalyEvent.AUTH_FAILURE, NOW)
    for i in range(1000):
        scores.record(f"10.0.{i // 256}.{i % 256}", AnomalyEvent.AUTH_FAILURE, NOW)
        if i % 50 == 0:
            scores.record("keep", AnomalyEvent.AUTH_FAILURE, NOW)  # recently used: kept
    assert len(scores) == 100
    assert scores.value("keep", NOW) > 0
    assert scores.value("10.0.0.0", NOW) == 0.0  # evicted


def test_ip_scores_prune_drops_decayed() -> None:
    scores = IpScores(AnomalyConfig())
    scores.record("old", AnomalyEvent.AUTH_FAILURE, NOW)  # 10
    scores.record("new", AnomalyEvent.AUTH_FAILURE, NOW + 600.0)
    scores.prune(NOW + 600.0)  # "old" is 10 / 2**10 < 1
    assert len(scores) == 1
    assert scores.value("new", NOW + 600.0) == pytest.approx(10.0)


# Credential stuffing.


def _detector(**settings: Any) -> CredentialStuffingDetector:
    return CredentialStuffingDetector(AnomalyConfig(**settings), key=b"test-key")


def test_stuffing_by_failure_count() -> None:
    detector = _detector()
    results = [detector.failure("192.0.2.1", None, NOW + i) for i in range(10)]
    assert results == [False] * 9 + [True]
    # The record is cleared on detection: a new offence is a new detection.
    assert detector.failure("192.0.2.1", None, NOW + 11.0) is False
    assert len(detector) == 1


def test_stuffing_failures_outside_the_window_do_not_add_up() -> None:
    detector = _detector()
    for i in range(100):  # one failure every 34 s: at most 9 inside any 5 min
        assert detector.failure("192.0.2.1", "alice", NOW + i * 34.0) is False


def test_one_users_typos_below_threshold_are_not_stuffing() -> None:
    detector = _detector()
    for i in range(9):
        assert detector.failure("192.0.2.1", "alice@example.com", NOW + i) is False
    assert detector.failure("192.0.2.2", "alice@example.com", NOW) is False


def test_stuffing_by_distinct_subjects() -> None:
    detector = _detector()
    results = [detector.failure("192.0.2.1", f"user{i}", NOW + i) for i in range(5)]
    assert results == [False] * 4 + [True]
    # Another IP is independent.
    assert detector.failure("192.0.2.2", "user0", NOW) is False


def test_stuffing_distinct_subjects_expire() -> None:
    detector = _detector()
    for i in range(4):
        detector.failure("192.0.2.1", f"user{i}", NOW)
    assert detector.failure("192.0.2.1", "user9", NOW + 301.0) is False


def test_stuffing_successes_count_as_subjects() -> None:
    detector = _detector()
    for i in range(4):
        detector.success("192.0.2.1", f"user{i}", NOW + i)
    detector.success("192.0.2.1", "user0", NOW + 5)  # the same subject again
    assert detector.failure("192.0.2.1", "user0", NOW + 6) is False
    assert detector.failure("192.0.2.1", "user4", NOW + 7) is True


def test_stuffing_successes_alone_never_suspect() -> None:
    detector = _detector()
    for i in range(50):  # an office behind one NAT address signing in
        detector.success("192.0.2.1", f"user{i}", NOW + i)
    assert len(detector) == 1


def test_stuffing_stores_no_raw_subject() -> None:
    detector = _detector()
    secret_subject = "victim@example.com"
    detector.failure("192.0.2.1", secret_subject, NOW)
    detector.success("192.0.2.1", "other-victim", NOW)
    record = detector._records["192.0.2.1"]
    stored = list(record.subjects)
    assert len(stored) == 2
    assert all(isinstance(d, bytes) and len(d) == 8 for d in stored)
    assert not any(secret_subject.encode() in d or b"victim" in d for d in stored)
    # Keyed: two detectors (two processes) hash the same subject differently.
    other = CredentialStuffingDetector(AnomalyConfig())
    other.failure("192.0.2.1", secret_subject, NOW)
    assert list(other._records["192.0.2.1"].subjects)[0] not in stored


def test_stuffing_accepts_any_subject_text() -> None:
    detector = _detector()
    assert detector.failure("192.0.2.1", "\ud800 lone surrogate", NOW) is False
    assert detector.failure("192.0.2.1", "", NOW) is False


def test_stuffing_memory_is_bounded() -> None:
    detector = CredentialStuffingDetector(AnomalyConfig(), max_ips=100)
    for i in range(1000):
        detector.failure(f"10.0.{i // 256}.{i % 256}", f"user{i}", NOW)
    assert len(detector) == 100
    # Per IP, the subjects kept never exceed the threshold.
    for i in range(1000):
        detector.success("192.0.2.1", f"user{i}", NOW)
    assert len(detector._records["192.0.2.1"].subjects) == 5
    detector.prune(NOW + 301.0)
    assert len(detector) == 0


def test_stuffing_subject_digests_are_remembered_boundedly() -> None:
    """A spray of distinct subjects still counts each one; the digest cache stays bounded."""
    detector = _detector()
    count = SUBJECT_DIGEST_CACHE + 500
    for i in range(count):
        detector.success(f"10.1.{i // 256}.{i % 256}", f"user{i}", NOW)
    assert detector._digest.cache_info().currsize == SUBJECT_DIGEST_CACHE
    # An evicted subject and a remembered one digest as a fresh computation would.
    key = detector._key
    for subject in ("user0", f"user{count - 1}", "\ud800"):
        assert detector._digest(subject) == subject_digest(subject, key)
    # Distinct subjects, remembered or not, still make an IP suspected.
    subjects = [f"user{i}" for i in (0, 1, 2, 3, count - 1)]
    results = [detector.failure("192.0.2.9", s, NOW + j) for j, s in enumerate(subjects)]
    assert results == [False] * 4 + [True]
