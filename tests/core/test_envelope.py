"""The envelope decoder: its fast path must decide exactly as the exact parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsguard.config import MessageConfig
from wsguard.core.envelope import Envelope, EnvelopeDecoder, EnvelopeError

NOW = 1_764_400_000.0


class SlowDecoder(EnvelopeDecoder):
    """The reference: never takes the fast path."""

    def _fast_decode(self, text: str) -> dict[str, Any] | None:
        return None


def _outcome(decoder: EnvelopeDecoder, text: str) -> tuple[str, Any]:
    try:
        envelope: Envelope = decoder.decode(text, NOW)
    except EnvelopeError as exc:
        return ("error", (exc.code, exc.path))
    return ("ok", (envelope.type, envelope.id, envelope.payload, envelope.csrf_token))


FAST, SLOW = EnvelopeDecoder(MessageConfig()), SlowDecoder(MessageConfig())


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "chat", "payload": {"text": "a", "text": "b"}}',
        '{"type": "chat", "type": "x", "payload": {}}',
        '{"type": "chat", "payload": {"a": 1, "\\u0061": 2}}',
        '{"type": "chat", "payload": {"text": ": starts with a colon"}}',
        '{"type": "chat", "payload": {"text": "x", "list": [{"k": 1}, {"k": 2}]}}',
        '{"type": "chat", "payload": {"list": [{"k": 1, "k": 2}]}}',
        '{"type": "chat", "payload": {"text": "del \\u007f here"}}',
        '{"type": "chat", "payload": {"text": "raw \x7f"}}',
        '{"type": "chat", "payload": {"__proto__": {"a": 1}, "text": "x"}}',
        '{"type": "chat", "payload": {"text": "x"}, "payload": {"text": "y"}}',
        '{"type":"chat","payload":{"a":{"b":{"c":{"d":1}}}},"csrfToken":"t"}',
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        '{"type": "chat", "payload": ' + "[" * 33 + "]" * 33 + "}",
        '{"type": "chat", "payload": {"n": NaN}}',
        '{"type": "chat", "id": "ok-1", "payload": {"text": "plain"}}',
        '{"type": "chat", "payload": {"text": "<a href=\\"x\\">y</a>"}}',
        '{"type": "chat", "payload": {"a\\"b": 1, "a\\"b": 2}}',
        '{"type": "chat", "payload": {"t": "q\\":", "t": 2}}',
        '{"type": "chat", "payload": {"t": "a\\bb"}}',
        '{"type": "chat", "payload": {"t": "a\\\\u0041"}}',
        '{"type": "chat", "payload": {"t": "line\\nnext\\ttab"}}',
    ],
)
def test_fast_path_agrees_with_exact_parser(text: str) -> None:
    assert _outcome(FAST, text) == _outcome(SLOW, text)


def test_duplicates_are_refused_on_both_paths() -> None:
    for text in (
        '{"type":"chat","payload":{"a":1,"a":2}}',
        '{"type":"chat","payload":{"a":1,"\\u0061":2}}',
        '{"type":"chat","payload":{"a" :1,"a":2}}',  # one key end with a space
        '{"type":"chat","payload":{"a"\t:1,"b":{"a":1,"a":2}}}',
    ):
        assert _outcome(FAST, text) == ("error", ("INVALID_MESSAGE", None))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "text", ":", " x"]),
                # Mostly compact, as browsers send; sometimes whitespace before ":".
                st.sampled_from([":", ":", ":", " :", "\t:", "\n :"]),
                inner,
            ),
            max_size=3,
        )
    ),
    max_leaves=12,
)


def _render(value: Any) -> str:
    """JSON text where lists of pairs become objects, duplicates allowed."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return "{" + ",".join(f"{json.dumps(k)}{sep}{_render(v)}" for k, sep, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_render(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=1500, deadline=None)
@given(payload=json_values, kind=st.sampled_from(["chat", "x"]))
def test_fast_path_agrees_on_generated_frames(payload: Any, kind: str) -> None:
    text = '{"type":' + json.dumps(kind) + ',"payload":' + _render(payload) + "}"
    assert _outcome(FAST, text) == _outcome(SLOW, text)
