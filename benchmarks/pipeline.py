"""The per-message pipeline in-process, no network: p50 and p99 per path and per stage.

A :class:`~wsguard.core.connection.ConnectionPolicy` is made by a real handshake
(``Guard.handshake``) on a guard with everything on, the audit log included, and
the real clock. Each path times ``policy.receive(frame)`` call by call with
``time.perf_counter_ns``, in :data:`CHUNKS` slices taken in turn with the other
paths' (A B C ... A B C ...): a slow stretch of this machine (seen once: the
first path's p50 at 6.9 us rather than 4.0, the next path's as usual) then
falls on every path a little rather than on one path whole. Refusal paths add
to the anomaly score; the thresholds are set out of reach so that every call
takes the same path. The stages are the functions ``receive`` calls, timed on
their own.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.common import (
    MARKUP_TEXT,
    PATH,
    PLAIN_TEXT,
    UNICODE_TEXT,
    AdminOnly,
    EchoMarkup,
    EchoPlain,
    guarded_config,
    make_token,
)
from wsguard.audit.writer import AuditWriter
from wsguard.core.connection import ConnectionPolicy
from wsguard.core.decisions import Accept, Deliver, HandshakeRequest, Reply
from wsguard.core.envelope import _DECODER
from wsguard.core.frames import encode_frame
from wsguard.core.guard import Guard
from wsguard.core.sanitize import HtmlCleaner, clean_tree
from wsguard.runtime import Runtime, build_runtime

ITERATIONS = 20_000
CHUNKS = 5  # slices per path, taken in turn with the other paths


async def _noop(ctx: Any, message: Any) -> None:
    del ctx, message


def _request(token: str) -> HandshakeRequest:
    headers = (("host", "127.0.0.1"), ("authorization", f"Bearer {token}"))
    return HandshakeRequest(peer="127.0.0.1", path=PATH, query="", headers=headers)


def _runtime(audit_path: Path, audit_queue: int, **rate_limits: float) -> Runtime:
    runtime = build_runtime(guarded_config(audit_path, audit_queue=audit_queue, **rate_limits))
    guard = runtime.guard
    guard.register("echo", EchoPlain, _noop, roles={"user"})
    guard.register("echo_html", EchoMarkup, _noop, roles={"user"})
    guard.register("admin_only", AdminOnly, _noop, roles={"admin"})
    return runtime


def _open(guard: Guard) -> ConnectionPolicy:
    decision = guard.handshake(_request(make_token()))
    assert isinstance(decision, Accept), decision
    assert guard.open_session(decision.policy, object())
    return decision.policy


def _frame(kind: str, text: str, csrf: str | None) -> str:
    message: dict[str, Any] = {"type": kind, "id": "m-1", "payload": {"text": text}}
    if csrf is not None:
        message["csrfToken"] = csrf
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples_ns)
    count = len(ordered)
    return {
        "p50": round(ordered[count // 2] / 1000, 3),
        "p99": round(ordered[min(count - 1, int(count * 0.99))] / 1000, 3),
    }


def sample_calls(function: Callable[[], object], iterations: int) -> list[int]:
    """Time ``function()`` call by call, after a warm-up; the times in nanoseconds."""
    clock = time.perf_counter_ns
    samples = [0] * iterations
    for _ in range(min(1000, iterations)):  # warm-up
        function()
    for index in range(iterations):
        start = clock()
        function()
        samples[index] = clock() - start
    return samples


def time_calls(function: Callable[[], object], iterations: int) -> dict[str, float]:
    """Time ``function()`` call by call; p50 and p99 in microseconds."""
    return percentiles(sample_calls(function, iterations))


def _outcome(decision: object) -> str:
    if isinstance(decision, Deliver):
        return "deliver"
    if isinstance(decision, Reply):
        frame = msgspec.json.decode(decision.frame)
        return str(frame["payload"].get("code", frame["type"]))
    return type(decision).__name__.lower()


def run(iterations: int = ITERATIONS) -> dict[str, Any]:
    """Every path and stage; returns ``{"paths": ..., "stages": ...}`` in microseconds."""
    # Each refusal path queues an audit event per call, faster than the writer
    # stores them: a queue that holds a whole path, emptied before the next,
    # so that every call takes the normal path and not the queue-full one.
    queue = iterations + 2000
    with tempfile.TemporaryDirectory(prefix="wsguard-bench-") as tmp:
        runtime = _runtime(Path(tmp) / "audit.db", queue)
        limited = _runtime(
            Path(tmp) / "audit-limited.db",
            queue,
            message_rate=1.0,
            message_window=3600.0,
            message_burst=1,
            violations_to_disconnect=10**9,
        )
        writers = [w for w in (runtime.audit, limited.audit) if w is not None]
        try:
            return _measure(runtime.guard, limited.guard, iterations, lambda: _drain(writers))
        finally:
            runtime.close()
            limited.close()


def _drain(writers: list[AuditWriter], timeout: float = 60.0) -> None:
    """Wait until the audit writers have stored what is queued."""
    deadline = time.monotonic() + timeout
    while any(w.queued for w in writers):
        if time.monotonic() > deadline:
            raise RuntimeError("the audit writer did not drain in time")
        time.sleep(0.02)


def _measure(
    guard: Guard, limited_guard: Guard, iterations: int, drain: Callable[[], None]
) -> dict[str, Any]:
    policy = _open(guard)
    csrf = policy.session.csrf_token
    limited = _open(limited_guard)
    limited.receive(_frame("echo", PLAIN_TEXT, limited.session.csrf_token))  # spends the burst
    cases: dict[str, tuple[ConnectionPolicy, str, str]] = {
        "valid_plain": (policy, _frame("echo", PLAIN_TEXT, csrf), "deliver"),
        "valid_html": (policy, _frame("echo_html", MARKUP_TEXT, csrf), "deliver"),
        "valid_unicode": (policy, _frame("echo", UNICODE_TEXT, csrf), "deliver"),
        "bad_json": (policy, '{"type":"echo","id":"m-1","payload":{"text":"x"', "INVALID_MESSAGE"),
        "unknown_type": (policy, _frame("nope", PLAIN_TEXT, csrf), "UNKNOWN_TYPE"),
        "bad_csrf": (policy, _frame("echo", PLAIN_TEXT, "y" * len(csrf)), "CSRF_INVALID"),
        "forbidden": (policy, _frame("admin_only", PLAIN_TEXT, csrf), "FORBIDDEN"),
        "rate_limited": (
            limited,
            _frame("echo", PLAIN_TEXT, limited.session.csrf_token),
            "RATE_LIMITED",
        ),
    }
    samples: dict[str, list[int]] = {name: [] for name in cases}
    chunk = max(1, iterations // CHUNKS)
    gc.collect()
    for _ in range(CHUNKS):
        for name, (target, frame, expected) in cases.items():
            drain()
            outcome = _outcome(target.receive(frame))
            if outcome != expected:
                raise RuntimeError(f"pipeline path {name}: expected {expected}, got {outcome}")
            samples[name] += sample_calls(lambda t=target, f=frame: t.receive(f), chunk)
    paths: dict[str, dict[str, Any]] = {
        name: {**percentiles(samples[name]), "outcome": cases[name][2]} for name in cases
    }
    return {"paths": paths, "stages": _stages(guard, policy, iterations)}


def _stages(guard: Guard, policy: ConnectionPolicy, iterations: int) -> dict[str, Any]:
    csrf = policy.session.csrf_token
    plain_frame = _frame("echo", PLAIN_TEXT, csrf)
    html_frame = _frame("echo_html", MARKUP_TEXT, csrf)
    decoder = guard._decoder
    dec_hook = guard._dec_hook
    now = guard.clock.now()
    raw = _DECODER.decode(plain_frame)
    plain_payload = {"text": PLAIN_TEXT}
    html_payload = {"text": MARKUP_TEXT}
    plain = msgspec.convert(plain_payload, EchoPlain, strict=True, dec_hook=dec_hook)
    markup = msgspec.convert(html_payload, EchoMarkup, strict=True, dec_hook=dec_hook)
    scanner = guard.signatures
    assert scanner is not None
    cleaner = HtmlCleaner()
    limiter = policy.limiter
    observe = guard.metrics.message_pipeline_seconds.observe
    token = make_token()
    stages: dict[str, tuple[Callable[[], object], int]] = {
        "clock_now": (guard.clock.now, iterations),
        "limiter_check": (
            lambda: limiter.check(now) or limiter.check_type("echo", now),
            iterations,
        ),
        "json_decode stdlib (slow path, duplicate-key hook)": (
            lambda: _DECODER.decode(plain_frame),
            iterations,
        ),
        "clean_tree (slow path)": (lambda: clean_tree(raw, 32), iterations),
        "envelope_decode plain (whole)": (
            lambda: decoder.decode(plain_frame, now),
            iterations,
        ),
        "envelope_decode html (whole)": (lambda: decoder.decode(html_frame, now), iterations),
        "csrf_compare": (lambda: policy._csrf_ok(csrf, now), iterations),
        "convert plain (msgspec+dec_hook)": (
            lambda: msgspec.convert(plain_payload, EchoPlain, strict=True, dec_hook=dec_hook),
            iterations,
        ),
        "convert html (msgspec+dec_hook+nh3)": (
            lambda: msgspec.convert(html_payload, EchoMarkup, strict=True, dec_hook=dec_hook),
            iterations,
        ),
        "html clean (HtmlCleaner: simple markup, no nh3)": (
            lambda: cleaner.clean(MARKUP_TEXT),
            iterations,
        ),
        "nh3 clean (prebuilt nh3.Cleaner)": (
            lambda: cleaner._cleaner.clean(MARKUP_TEXT),
            iterations,
        ),
        "signatures_scan plain": (lambda: scanner.scan(plain, "$.payload"), iterations),
        "signatures_scan html": (lambda: scanner.scan(markup, "$.payload"), iterations),
        "sessions_touch": (lambda: guard.sessions.touch(policy.session.id, now), iterations),
        "metrics_observe": (lambda: observe(1e-5), iterations),
        "encode_reply": (lambda: encode_frame("echo", plain, "m-1"), iterations),
        "jwt_verify HS256": (lambda: guard.verifier.verify(token), 2000),
        "handshake_decision (in-process)": (lambda: _handshake_once(guard, token), 2000),
    }
    # Internals that may not exist in every version: timed when present.
    fast_decode = getattr(decoder, "_fast_decode", None)
    fields = getattr(decoder, "_fields", None)
    if fast_decode is not None:
        stages["envelope fast path plain (msgspec decode+scans)"] = (
            lambda: fast_decode(plain_frame),
            iterations,
        )
        if fields is not None and fast_decode(plain_frame) is not None:
            decoded = fast_decode(plain_frame)
            stages["envelope fields check"] = (lambda: fields(decoded, now), iterations)
    results: dict[str, Any] = {
        name: time_calls(function, count) for name, (function, count) in stages.items()
    }
    if fast_decode is not None:
        results["fast_path_taken"] = {
            "plain": fast_decode(plain_frame) is not None,
            "html": fast_decode(html_frame) is not None,
        }
    return results


def _handshake_once(guard: Guard, token: str) -> None:
    decision = guard.handshake(_request(token))
    assert isinstance(decision, Accept)
    decision.policy.release()
