"""The envelope decoder: its fast path must decide exactly as the exact parser."""

from __future__ import annotations

import json
import unicodedata
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


# Non-ASCII frames take the fast path when sanitization would change nothing.

UNICODE_PIECES = (
    "a",
    "e",
    "n",
    "t",
    " ",
    "é",  # precomposed
    "e\u0301",  # decomposed: not NFC
    "\u0301",  # a combining mark alone
    "\u0323\u0307",  # two marks, canonical order
    "\u0307\u0323",  # two marks, not in canonical order
    "\u1100\u1161",  # Hangul jamo that compose
    "가",
    "\u212b",  # ANGSTROM SIGN: NFC maps it to Å
    "\u00c5",
    "\ufb01",  # a compatibility ligature: NFC keeps it
    "\xa0",
    "\x85",
    "\x9f",
    "\u202e",
    "\u2067",
    "😀",
    "€",
    "\n",
    "\t",
    '"',
    "\\",
    "/",
    "<",
)
unicode_text = st.lists(st.sampled_from(UNICODE_PIECES), max_size=8).map("".join)
unicode_values = st.recursive(
    st.none() | st.integers(-5, 5) | unicode_text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(
            st.tuples(unicode_text, st.sampled_from([":", " :"]), inner),
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _render_raw(value: Any) -> str:
    """As _render, with non-ASCII characters raw, as browsers send them."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        return (
            "{"
            + ",".join(
                f"{json.dumps(k, ensure_ascii=False)}{sep}{_render_raw(v)}" for k, sep, v in value
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_render_raw(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


@settings(max_examples=2000, deadline=None)
@given(payload=unicode_values, kind=st.sampled_from(["chat", "é", "e\u0301"]))
def test_fast_path_agrees_on_non_ascii_frames(payload: Any, kind: str) -> None:
    text = '{"type":' + json.dumps(kind, ensure_ascii=False) + ',"payload":' + _render_raw(payload)
    text += "}"
    assert _outcome(FAST, text) == _outcome(SLOW, text)


def test_non_ascii_frames_take_the_fast_path_only_when_nfc_and_allowed() -> None:
    fast = '{"type":"chat","payload":{"text":"héllo wörld 😀 가 \\n\\"ok\\""}}'
    assert FAST._fast_decode(fast) is not None
    for slow in (
        '{"type":"chat","payload":{"text":"he\u0301llo"}}',  # not NFC: normalised on the slow path
        '{"type":"chat","payload":{"text":"\u212b"}}',
        '{"type":"chat","payload":{"text":"evil\u202etxt.exe"}}',  # refused on the slow path
        '{"type":"chat","payload":{"text":"c1\x85"}}',
    ):
        assert FAST._fast_decode(slow) is None, slow
        assert _outcome(FAST, slow) == _outcome(SLOW, slow)
    # And the slow path does what the fast one must never skip.
    assert _outcome(FAST, '{"type":"chat","payload":{"t":"e\u0301"}}')[1][2] == {"t": "é"}
    assert _outcome(FAST, '{"type":"chat","payload":{"t":"a\u202e"}}')[0] == "error"


def test_nfc_of_a_frame_is_nfc_of_its_strings() -> None:
    # What the fast path relies on: no character of the JSON syntax or of a simple
    # escape composes or reorders with any neighbour, in all of Unicode.
    nfc = unicodedata.is_normalized
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        if not nfc("NFC", char):
            continue
        for syntax in '"\\/\n\r\t':
            assert nfc("NFC", syntax + char) and nfc("NFC", char + syntax), hex(code)
