"""The C envelope checks must decide exactly as their Python reference."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsguard.core import _envelope_scan, envelope

# Built by setup.py with the package. `make test` needs a C compiler for it: a
# failed build fails here instead of leaving the fallback to be tested twice.


def test_the_decoder_uses_the_extension() -> None:
    assert envelope.prescan is _envelope_scan.prescan
    assert envelope.count_keys is _envelope_scan.count_keys


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
        ('{"a":"\\\x00"}', -1),  # strchr would find NUL in any set
        ('{"__proto__":1}', -1),
        ('{"a":"constructor"}', -1),
        ('{"a":"\x7f"}', -1),
        ('{"a":"é"}', -1),
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
