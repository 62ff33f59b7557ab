"""The C extension's record text equals the Python path's, or it declines."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wsguard.audit import _record_text, chain
from wsguard.audit.chain import Chain, canonical, py_halves, record_ok
from wsguard.audit.events import AuditEvent

KEY = b"k" * 32
# ASCII with every control character, quotes and backslashes; and any text.
ascii_text = st.text(st.characters(max_codepoint=127), max_size=24)
any_text = ascii_text | st.text(max_size=12)
optional = st.none() | any_text


class Name(str):
    """A str subclass: the C path takes exact strings only."""


def fast(event: AuditEvent, prev_hash: object, seq: object) -> bool:
    """Whether the C extension must take ``event``: what its docstring promises."""
    strings = [event.event, event.severity, prev_hash]
    strings += [v for v in event[3:7] if v is not None]
    return (
        all(type(v) is str and v.isascii() for v in strings)
        and type(event.time) is float
        and math.isfinite(event.time)
        and type(seq) is int
        and -(2**63) <= seq < 2**63
        and not event.details
    )


def test_the_extension_is_built_and_used() -> None:
    assert chain._c_halves is _record_text.halves


@settings(max_examples=500, deadline=None)
@given(
    name=any_text | st.builds(Name, ascii_text),
    severity=any_text | st.just(3),
    time=st.floats() | st.integers(-(2**40), 2**40),
    request_id=optional,
    session_id=optional,
    user=optional,
    client_ip=optional,
    details=st.just({}) | st.dictionaries(ascii_text, st.integers(), min_size=1, max_size=2),
    prev_hash=any_text,
    seq=st.integers(0, 2**70),
)
@example(
    name="auth_succeeded",
    severity="info",
    time=1_764_400_000.123456,
    request_id=None,
    session_id="0f" * 16,
    user="alice",
    client_ip="127.0.0.1",
    details={},
    prev_hash="0" * 64,
    seq=1,
)
@example(  # every escape json writes, and a huge and a tiny time
    name='"\\\b\f\n\r\t\x00\x1f\x7f',
    severity="info",
    time=1e300,
    request_id="\x01",
    session_id=None,
    user="",
    client_ip=None,
    details={},
    prev_hash="",
    seq=2**63 - 1,
)
def test_c_halves_equal_the_python_path_or_decline(
    name: str,
    severity: Any,
    time: Any,
    request_id: str | None,
    session_id: str | None,
    user: str | None,
    client_ip: str | None,
    details: dict[str, Any],
    prev_hash: str,
    seq: int,
) -> None:
    event = AuditEvent(name, severity, time, request_id, session_id, user, client_ip, details)
    found = _record_text.halves(event, prev_hash, seq)
    if fast(event, prev_hash, seq):
        assert found == py_halves(event, prev_hash, seq)[:2]
    else:
        assert found is None


def test_the_usual_event_takes_the_c_path_and_signs_as_python_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = [
        AuditEvent("auth_succeeded", "info", 1_764_400_000.5, None, "ab" * 16, "bob", "10.0.0.1"),
        AuditEvent("handshake_refused", "warning", 1.5, client_ip="::1", details={"status": 401}),
        AuditEvent("auth_failed", "warning", 2.0, user="Zoë"),  # not ASCII: Python
        AuditEvent("ban_added", "warning", 3, user="x"),  # an int time: Python
    ]
    assert _record_text.halves(events[0], "0" * 64, 1) is not None
    with_c, without = Chain(KEY), Chain(KEY)
    records = [with_c.record(e) for e in events]
    monkeypatch.setattr(chain, "_c_halves", None)
    expected = [without.record(e) for e in events]
    assert records == expected
    assert [r.text for r in records] == [r.text for r in expected]  # type: ignore[attr-defined]
    for record in records:
        assert record.text == canonical(record)  # type: ignore[attr-defined]
        assert record_ok(KEY, record)


def test_wrong_arguments_are_refused() -> None:
    event = AuditEvent("a", "info", 1.0)
    with pytest.raises(TypeError):
        _record_text.halves(event, "0")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _record_text.halves(tuple(event)[:7], "0", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _record_text.halves(["a"] * 8, "0", 1)  # type: ignore[arg-type]
