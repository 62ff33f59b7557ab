"""The C envelope checks must decide exactly as their Python reference."""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsguard.config import MessageConfig
from wsguard.core import _envelope_scan, envelope, sanitize

# Built by setup.py with the package. `make test` needs a C compiler for it: a
# failed build fails here instead of leaving the fallback to be tested twice.


def test_the_decoder_uses_the_extension() -> None:
    assert envelope.prescan is _envelope_scan.prescan
    assert envelope.count_keys is _envelope_scan.count_keys
    assert envelope.envelope_fields is _envelope_scan.envelope_fields


# Pieces that move the verdict or the count: quotes, blanks and colons (key
# ends), brackets (depth), every escape, DEL, non-ASCII, marker names and parts.
PIECES = (
    '"',
    ":",
    '":',
    '" :',
    '"\t\r\n :',
    " ",
    "{",
    "[",
    "}",
    "]",
    "\\",
    '\\"',
    "\\\\",
    "\\/",
    "\\n",
    "\\t",
    "\\r",
    "\\b",
    "\\f",
    "\\u0061",
    "\\x",
    "\\\x00",
    "\x7f",
    "\x80",
    "\x9f",
    "\xa0",
    "\u202a",
    "\u202e",
    "\u2066",
    "\u2069",
    "\u2065",
    "\u206a",
    "\ud800",
    "\udfff",
    "\u0301",
    "é",
    "€",
    "😀",
    "__proto__",
    "__proto_",
    "_",
    "constructor",
    "constructo",
    "c",
    "prototype",
    "prototyp",
    "p",
    "a",
    "1",
    ",",
)
texts = st.lists(st.sampled_from(PIECES), max_size=40).map("".join) | st.text(max_size=60)


@settings(max_examples=3000, deadline=None)
@given(text=texts, max_depth=st.integers(0, 12))
def test_prescan_matches_the_reference(text: str, max_depth: int) -> None:
    assert _envelope_scan.prescan(text, max_depth) == envelope.py_prescan(text, max_depth)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"chat","payload":{"text":"hi"}}', 3),
        ('{"a" :1,"b"\t\n:2}', 2),
        ('{"a":"\\":"}', 2),  # an escaped quote before a colon only adds to the count
        ('{"a":"\\u0061"}', -1),
        ('{"a":"x\\', 1),  # a lone trailing backslash: msgspec refuses the JSON
        ('{"a":"\\\x00"}', -1),  # NUL is no escape
        ('{"__proto__":1}', -1),
        ('{"a":"constructor"}', -1),
        ('{"a":"\x7f"}', -1),
        ('{"a":"é 😀 \xa0"}', 1),  # non-ASCII: NFC is the caller's check
        ('{"a":"\x85"}', -1),  # C1 control
        ('{"a":"\u202e"}', -1),  # bidi override
        ('{"a":"\u2069"}', -1),  # bidi isolate
        ('{"a":"\ud800"}', -1),  # lone surrogate (a str can hold one)
        ('{"constructor😀":1}', -1),  # markers in a text of 4-byte characters
        ("[" * 32, -1),
        ("[" * 31 + "{", -1),
        ("[" * 31, 0),
        ("", 0),
    ],
)
def test_prescan_cases(text: str, expected: int) -> None:
    assert _envelope_scan.prescan(text, 31) == expected
    assert envelope.py_prescan(text, 31) == expected


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=30,
)


@settings(max_examples=1000, deadline=None)
@given(value=json_values)
def test_count_keys_matches_the_reference(value: Any) -> None:
    decoded = msgspec.json.decode(json.dumps(value))  # what the decoder really counts
    assert _envelope_scan.count_keys(decoded) == envelope.py_count_keys(decoded)


def test_count_keys_skips_what_msgspec_does_not_make() -> None:
    # Tuples, subclasses and scalars hold no keys for this count, as in Python.
    class Sub(dict[str, int]):
        pass

    value = {"a": ({"x": 1},), "b": Sub(y=1), "c": [1, {"d": {}}]}
    assert _envelope_scan.count_keys(value) == envelope.py_count_keys(value) == 4


def test_deep_values_raise_instead_of_crashing() -> None:
    deep: list[Any] = []
    for _ in range(200_000):
        deep = [deep]
    with pytest.raises(RecursionError):
        _envelope_scan.count_keys(deep)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        _envelope_scan.prescan(b'{"a":1}', 31)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _envelope_scan.prescan('{"a":1}')  # type: ignore[call-arg]
    with pytest.raises(OverflowError):
        _envelope_scan.prescan('{"a":1}', 2**70)


# envelope_fields: the C success path of EnvelopeDecoder._checked_fields.

DECODER = envelope.EnvelopeDecoder(MessageConfig())
NOW = 1_764_400_000.0
NOW_MS = int(NOW * 1000)
field_values = (
    st.none()
    | st.booleans()
    | st.integers(NOW_MS - 400_000, NOW_MS + 400_000)
    | st.integers()
    | st.sampled_from([2**63, -(2**63), 10**400, -(10**400), NOW_MS + 2**53])
    | st.floats()
    | st.text(max_size=3)
    | st.sampled_from(["chat", "m-1", "a" * 64, "a" * 65, "x" * 256, "x" * 257, "id é", ""])
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
    | st.lists(st.integers(), max_size=2)
)
ENVELOPE_FIELDS = ("type", "id", "payload", "csrfToken", "timestamp", "other", "Type")


def _checked(obj: dict[str, Any]) -> tuple[str, Any]:
    try:
        return ("ok", DECODER._checked_fields(obj, NOW))
    except envelope.EnvelopeError as exc:
        return ("error", exc.code)


SKEW_MS = int(DECODER._max_skew_ms)
# Each key absent, valid (often at a limit) or anything: most envelopes are then
# one field away from valid, where a wrong limit in C would show.
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["chat", "x", ""]) | field_values,
        "id": st.sampled_from(["m-1", "a" * 64, "a" * 65, "a:b.c_d-E9", "a b", None])
        | field_values,
        "payload": st.sampled_from([{}, {"t": 1}]) | field_values,
        "csrfToken": st.sampled_from(["t", "x" * 256, "x" * 257, None]) | field_values,
        "timestamp": st.sampled_from(
            [NOW_MS + d for d in (-SKEW_MS - 1, -SKEW_MS, 0, SKEW_MS, SKEW_MS + 1)]
        )
        | field_values,
        "other": field_values,
    },
)


@settings(max_examples=3000, deadline=None)
@given(obj=envelopes | st.dictionaries(st.sampled_from(ENVELOPE_FIELDS), field_values))
def test_envelope_fields_builds_what_the_checks_accept_and_declines_the_rest(
    obj: dict[str, Any],
) -> None:
    _agrees(obj)


def _agrees(obj: dict[str, Any]) -> None:
    built = _envelope_scan.envelope_fields(
        obj, NOW, DECODER._max_skew_ms, envelope.MAX_CSRF_TOKEN_CHARS, envelope.Envelope
    )
    outcome, checked = _checked(obj)
    if outcome == "ok":
        assert type(built) is envelope.Envelope, obj
        assert built == checked, obj
        assert [type(a) for a in built] == [type(b) for b in checked], obj
    else:
        assert built is None, obj


VALID = {"type": "chat", "id": "m-1", "payload": {}, "csrfToken": "t", "timestamp": NOW_MS}
CANDIDATES = (
    *(NOW_MS + d for d in (-SKEW_MS - 1, -SKEW_MS, SKEW_MS, SKEW_MS + 1)),
    *("a" * n for n in (0, 1, 64, 65, 256, 257)),
    *(f"a{c}b" for c in " _.:-/\\é\x00+"),
    "A-Z_09.x:y",
    True,
    False,
    1.5,
    float("nan"),
    10**400,
    2**63,
    None,
    {},
    [],
    ["chat"],
)


def test_envelope_fields_one_field_off_a_valid_envelope() -> None:
    # Every key of a valid envelope set in turn to every candidate, or removed,
    # plus an unknown key: the limits and classes of characters, exactly.
    for key in VALID:
        _agrees({k: v for k, v in VALID.items() if k != key})
        for candidate in CANDIDATES:
            _agrees({**VALID, key: candidate})
    for extra in ("other", "Type", "csrf_token"):
        _agrees({**VALID, extra: 1})


def test_envelope_fields_valid_envelope() -> None:
    payload = {"text": "hi"}
    obj = {"type": "chat", "id": "m-1", "payload": payload, "csrfToken": "t", "timestamp": NOW_MS}
    built = DECODER._fields(obj, NOW)
    assert built == ("chat", "m-1", payload, "t", NOW_MS)
    assert built.payload is payload and built.type == "chat"
    bare = DECODER._fields({"type": "ping"}, NOW)
    assert bare == ("ping", None, {}, None, None)
    assert bare.payload is not DECODER._fields({"type": "ping"}, NOW).payload  # a new {} each


def test_envelope_fields_keeps_reference_counts() -> None:
    payload = {"text": "hi"}
    kind, token = "chat-" + str(NOW_MS), "t" * 32  # not interned or cached by anyone else
    obj = {"type": kind, "payload": payload, "csrfToken": token, "timestamp": NOW_MS + 1}
    before = [sys.getrefcount(v) for v in (payload, kind, token, obj["timestamp"])]
    for _ in range(1000):
        built = DECODER._fields(obj, NOW)
        del built
    after = [sys.getrefcount(v) for v in (payload, kind, token, obj["timestamp"])]
    assert after == before


def test_huge_timestamps_are_refused_not_crashed_on() -> None:
    # A JSON integer has no size limit; this one overflowed a float (OverflowError).
    for text in (
        '{"type":"chat","payload":{},"timestamp":1' + "0" * 400 + "}",
        '{"type":"chat","payload":{},"timestamp":-1' + "0" * 400 + "}",
        '{"type": "chat", "payload": {}, "timestamp": 1' + "0" * 400 + "}",
    ):
        with pytest.raises(envelope.EnvelopeError) as caught:
            DECODER.decode(text, NOW)
        assert caught.value.code == "INVALID_MESSAGE"
    fine = '{"type":"chat","timestamp":' + str(NOW_MS) + "}"
    assert DECODER.decode(fine, NOW).timestamp == NOW_MS


def test_envelope_fields_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        _envelope_scan.envelope_fields({}, NOW, 1.0, 256, dict)
    with pytest.raises(TypeError):
        _envelope_scan.envelope_fields({}, "now", 1.0, 256, envelope.Envelope)


def test_prescan_sends_every_character_sanitizing_refuses_to_the_slow_path() -> None:
    # Tied to sanitize's own list, over all of Unicode: a character added there
    # and not to the C scan would otherwise skip the check on the fast path.
    for code in range(0x7F, 0x110000):
        char = chr(code)
        refused = sanitize._REFUSED_CHAR.search(char) is not None
        assert (_envelope_scan.prescan(char, 31) == -1) == refused, hex(code)
        assert (envelope.py_prescan(char, 31) == -1) == refused, hex(code)
