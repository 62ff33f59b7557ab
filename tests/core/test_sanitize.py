"""Attacks on :mod:`wsguard.core.sanitize`, and legitimate values that must pass."""

from __future__ import annotations

import unicodedata
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsguard.core.sanitize import (
    FORBIDDEN_KEYS,
    Html,
    HtmlCleaner,
    SafePath,
    TooDeep,
    UnsafeValue,
    check_safe_path,
    clean_tree,
    make_dec_hook,
)
from wsguard.exceptions import ConfigurationError

MAX_DEPTH = 32


def nested_lists(depth: int) -> list[Any]:
    """``depth`` nested lists, built without recursion."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# Prototype pollution.


@pytest.mark.parametrize("key", sorted(FORBIDDEN_KEYS))
def test_forbidden_key_removed_at_top_level(key: str) -> None:
    """A polluting key is dropped; its siblings are kept."""
    assert clean_tree({key: {"isAdmin": True}, "room": "general"}, MAX_DEPTH) == {"room": "general"}


@pytest.mark.parametrize("key", sorted(FORBIDDEN_KEYS))
def test_forbidden_key_removed_when_nested(key: str) -> None:
    """Polluting keys are dropped inside lists and objects at any depth."""
    value = {
        "payload": {
            "items": [{"name": "a", key: {"polluted": 1}}, {"deep": {key: 1, "ok": 2}}],
            key: "x",
        }
    }
    assert clean_tree(value, MAX_DEPTH) == {
        "payload": {"items": [{"name": "a"}, {"deep": {"ok": 2}}]}
    }


def test_forbidden_key_removal_does_not_mutate_input() -> None:
    """The input is left as it was; a new object is returned."""
    value = {"a": 1, "__proto__": {"b": 2}, "c": 3}
    result = clean_tree(value, MAX_DEPTH)
    assert result == {"a": 1, "c": 3}
    assert list(result) == ["a", "c"]
    assert "__proto__" in value


def test_legitimate_keys_that_resemble_forbidden_ones_are_kept() -> None:
    """Only exact matches are removed."""
    value = {"proto": 1, "__proto": 2, "Constructor": 3, "prototypes": 4, "constructor_id": 5}
    assert clean_tree(value, MAX_DEPTH) == value


def test_clean_tree_returns_unchanged_containers_without_copying() -> None:
    """The common case allocates nothing: the same objects come back."""
    payload = {"room": "general", "text": "hello world", "tags": ["a", "b"]}
    value = {"type": "chat", "id": "c-1", "payload": payload, "timestamp": 1764400000000}
    result = clean_tree(value, MAX_DEPTH)
    assert result is value
    assert result["payload"] is payload


def test_unchanged_siblings_are_shared_after_a_change() -> None:
    """Only the changed path is copied."""
    untouched = {"x": ["y"]}
    value = {"a": untouched, "b": {"constructor": 1}}
    result = clean_tree(value, MAX_DEPTH)
    assert result == {"a": {"x": ["y"]}, "b": {}}
    assert result["a"] is untouched


# Unicode normalisation.


def test_values_are_nfc_normalised() -> None:
    """A decomposed "é" becomes the composed one, in lists too."""
    assert clean_tree({"name": "e\u0301"}, MAX_DEPTH) == {"name": "\u00e9"}
    assert clean_tree(["cafe\u0301"], MAX_DEPTH) == ["caf\u00e9"]
    assert clean_tree("e\u0301", MAX_DEPTH) == "\u00e9"


def test_keys_are_nfc_normalised() -> None:
    """Keys are strings too."""
    assert clean_tree({"cafe\u0301": 1, "b": 2}, MAX_DEPTH) == {"caf\u00e9": 1, "b": 2}


def test_keys_equal_after_normalisation_are_refused() -> None:
    """Two keys that NFC makes equal would silently overwrite each other."""
    with pytest.raises(UnsafeValue) as info:
        clean_tree({"p": {"\u00e9": "composed", "e\u0301": "decomposed"}}, MAX_DEPTH)
    assert info.value.path == "$.p"


def test_non_ascii_text_passes_unchanged() -> None:
    """Legitimate non-Latin and right-to-left text is kept."""
    value = {"text": "שלום עולם, 你好, Ünïcödé ✓, emoji 🎉"}
    assert clean_tree(value, MAX_DEPTH) == value


# Control and bidi characters.


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x0b", "\x0c", "\x7f", "\x85", "\x9f"])
def test_control_characters_refused_with_path(char: str) -> None:
    """The error names the path and hides the value."""
    secret = f"evil{char}payload"
    with pytest.raises(UnsafeValue) as info:
        clean_tree({"a": [0, {"b": secret}]}, MAX_DEPTH)
    assert info.value.path == "$.a[1].b"
    assert info.value.reason == "control character"
    assert "evil" not in str(info.value)
    assert "evil" not in repr(info.value)


def test_path_prefix_is_used() -> None:
    """A subtree's errors are reported under the caller's path."""
    with pytest.raises(UnsafeValue) as info:
        clean_tree({"items": ["ok", "bad\x00"]}, MAX_DEPTH, path="$.payload")
    assert info.value.path == "$.payload.items[1]"


def test_unusual_keys_are_quoted_in_the_path() -> None:
    """Keys that are not identifiers do not make the path ambiguous."""
    with pytest.raises(UnsafeValue) as info:
        clean_tree({"a.b": {"0": "\x00"}}, MAX_DEPTH)
    assert info.value.path == '$["a.b"]["0"]'


def test_tab_newline_carriage_return_allowed() -> None:
    """Whitespace controls are ordinary text."""
    value = {"text": "line 1\r\nline 2\tend\n"}
    assert clean_tree(value, MAX_DEPTH) is value


@pytest.mark.parametrize(
    "char", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2069"]
)
def test_bidi_controls_refused(char: str) -> None:
    """Trojan-source style overrides and isolates are refused, also in non-ASCII text."""
    with pytest.raises(UnsafeValue) as info:
        clean_tree({"file": [f"caf\u00e9{char}fdp.exe"]}, MAX_DEPTH)
    assert info.value.path == "$.file[0]"
    assert info.value.reason == "bidirectional control character"
    assert "exe" not in str(info.value)


def test_refused_key_is_reported_at_its_object_without_the_key() -> None:
    """The key is the offending value, so it is not part of the path."""
    with pytest.raises(UnsafeValue) as info:
        clean_tree({"a": {"secret\u202ekey": 1}}, MAX_DEPTH)
    assert info.value.path == "$.a"
    assert "secret" not in str(info.value)


def test_lone_surrogate_refused() -> None:
    """The stdlib JSON decoder accepts "\\ud800"; it cannot be encoded later."""
    with pytest.raises(UnsafeValue) as info:
        clean_tree({"t": "a\ud800"}, MAX_DEPTH)
    assert info.value.reason == "lone surrogate"


def test_non_json_values_refused() -> None:
    """Values a JSON decoder cannot produce fail closed."""
    with pytest.raises(UnsafeValue) as info:
        clean_tree({"a": [b"bytes"]}, MAX_DEPTH)
    assert info.value.path == "$.a[0]"


# Depth.


def test_depth_at_limit_passes() -> None:
    """With max_depth=32, 32 nested containers pass."""
    value = nested_lists(MAX_DEPTH)
    assert clean_tree(value, MAX_DEPTH) is value


def test_depth_over_limit_refused() -> None:
    """With max_depth=32, 33 nested containers fail."""
    with pytest.raises(TooDeep):
        clean_tree(nested_lists(MAX_DEPTH + 1), MAX_DEPTH)


def test_depth_counts_objects_and_lists() -> None:
    """Objects count like lists; scalars inside the deepest container are fine."""
    value: Any = "leaf"
    for level in range(MAX_DEPTH):
        value = {"k": value} if level % 2 else [value]
    assert clean_tree(value, MAX_DEPTH) is value
    with pytest.raises(TooDeep):
        clean_tree({"k": value}, MAX_DEPTH)


def test_huge_nesting_raises_too_deep_not_recursion_error() -> None:
    """The walk stops at max_depth, far below the recursion limit."""
    with pytest.raises(TooDeep):
        clean_tree(nested_lists(100_000), MAX_DEPTH)


# Paths.


@pytest.mark.parametrize(
    "attack",
    [
        "../../etc/passwd",
        "..",
        "a/../../b",
        "..%2f..%2fetc",
        "%2e%2e/x",
        "%2E%2E%2Fx",
        "..\\\\windows",
        "..\\windows",
        "a\\..\\..\\b",
        "\uff0fetc",
        "\uff0e\uff0e/x",
        "\uff0e\uff0e\uff0fx",
        "\uff0e\uff0e\uff3cx",
        "\u2025/x",
        "a\x00.txt",
        "/etc/passwd",
        "\\\\server\\share\\x",
        "//server/share",
        "C:\\x",
        "c:x",
        "%c0%ae%c0%ae/",
        "%e0%80%ae%e0%80%ae/x",
        "..%c1%9cx",
        "..%c0%afx",
        "%252e%252e/",
        "a%00.txt",
        "..%5cx",
        "%u002e%u002e/x",
        "a/.../b",
        "a/.. /b",
        "a\u2215..\u2215b",
        "report\u202efdp.exe",
        "",
    ],
)
def test_path_attacks_refused(attack: str) -> None:
    """Traversal, absolute, encoded and look-alike forms are all refused."""
    with pytest.raises(UnsafeValue) as info:
        check_safe_path(attack)
    if attack:
        assert attack not in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "report.pdf",
        "dir/sub/file.txt",
        "notes/2024/a.txt",
        "a..b",
        "a..b.txt",
        ".env",
        "100% done.txt",
    ],
)
def test_safe_paths_pass(name: str) -> None:
    """Ordinary names and relative paths come back unchanged."""
    assert check_safe_path(name) is name


def test_non_ascii_safe_path_passes() -> None:
    """Compatibility forms that do not make a separator or dot segment are fine."""
    name = "r\u00e9sum\u00e9 \uff21.pdf"
    assert check_safe_path(name) is name


# HTML.


@pytest.fixture(scope="module")
def cleaner() -> HtmlCleaner:
    return HtmlCleaner()


def test_event_handler_attributes_removed(cleaner: HtmlCleaner) -> None:
    """``onerror`` does not survive (nor does the img, which is not allowed)."""
    result = cleaner.clean("<img src=x onerror=alert(1)>")
    assert "onerror" not in result
    assert "alert" not in result
    assert cleaner.clean('<b onclick="alert(1)">x</b>') == "<b>x</b>"


def test_script_removed_with_content(cleaner: HtmlCleaner) -> None:
    result = cleaner.clean("<script>alert(1)</script>hi")
    assert result == "hi"


def test_allowed_markup_kept(cleaner: HtmlCleaner) -> None:
    assert cleaner.clean("<b>ok</b>") == "<b>ok</b>"
    assert cleaner.clean("<p><em>a</em><br>b</p>") == "<p><em>a</em><br>b</p>"


def test_plain_text_with_ampersand_is_escaped(cleaner: HtmlCleaner) -> None:
    """A bare ``&`` becomes an entity, which displays as ``&``."""
    assert cleaner.clean("plain & text") == "plain &amp; text"


def test_plain_text_without_markup_is_returned_as_is(cleaner: HtmlCleaner) -> None:
    text = "hello world > there"
    assert cleaner.clean(text) is text


@pytest.mark.parametrize(
    "href",
    ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "data:text/html,x"],
)
def test_dangerous_hrefs_dropped(cleaner: HtmlCleaner, href: str) -> None:
    result = cleaner.clean(f'<a href="{href}">x</a>')
    assert "href" not in result
    assert "alert" not in result
    assert result.endswith(">x</a>")


def test_safe_links_kept_with_rel(cleaner: HtmlCleaner) -> None:
    result = cleaner.clean('<a href="https://example.com/" title="t" target="_blank">x</a>')
    assert result == '<a href="https://example.com/" rel="noopener noreferrer">x</a>'


def test_custom_tags_and_attributes() -> None:
    custom = HtmlCleaner(tags=["span", "img"], attributes={"img": ["alt"]})
    assert custom.clean('<b>x</b><img alt="a" src="y">') == 'x<img alt="a">'


@pytest.mark.parametrize(
    ("tags", "attributes"),
    [(["b", "script"], None), (["style"], None), (["a"], {"a": ["href", "rel"]})],
)
def test_unsafe_cleaner_configuration_refused(
    tags: list[str], attributes: dict[str, list[str]] | None
) -> None:
    """Refused at startup, not by a panic in nh3 on the first message."""
    with pytest.raises(ConfigurationError):
        HtmlCleaner(tags=tags, attributes=attributes)


# msgspec dec_hook.


class Upload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: SafePath
    body: Html = Html("")


@pytest.fixture(scope="module")
def hook() -> Any:
    return make_dec_hook(HtmlCleaner())


def test_dec_hook_refuses_unsafe_path_with_field_path(hook: Any) -> None:
    """The ValidationError names the field, never the value."""
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({"name": "../../etc/passwd"}, Upload, dec_hook=hook, strict=True)
    message = str(info.value)
    assert "unsafe path" in message
    assert message.endswith("- at `$.name`")
    assert "passwd" not in message
    assert ".." not in message


def test_dec_hook_cleans_html_and_accepts_safe_path(hook: Any) -> None:
    result = msgspec.convert(
        {"name": "dir/report.pdf", "body": "<b>hi</b><script>x</script>"},
        Upload,
        dec_hook=hook,
        strict=True,
    )
    assert result.name == "dir/report.pdf"
    assert isinstance(result.name, SafePath)
    assert result.body == "<b>hi</b>"
    assert isinstance(result.body, Html)


@pytest.mark.parametrize("data", [{"name": 3}, {"name": "a.txt", "body": ["<b>"]}])
def test_dec_hook_requires_strings(hook: Any, data: dict[str, Any]) -> None:
    """Strict mode hands the hook any JSON value; non-strings are refused."""
    with pytest.raises(msgspec.ValidationError, match="expected a string"):
        msgspec.convert(data, Upload, dec_hook=hook, strict=True)


def test_dec_hook_declines_other_types(hook: Any) -> None:
    with pytest.raises(NotImplementedError):
        hook(complex, "1+2j")


# Properties.

_SPICY_TEXT = st.text(alphabet="ae/.<&\t\n\x00\x1b\x85\u0301\u00e9\u202e\u2066\uff0e")
_KEYS = st.text(max_size=8) | _SPICY_TEXT | st.sampled_from(sorted(FORBIDDEN_KEYS))
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | _SPICY_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=40,
)


def _assert_clean(value: Any) -> None:
    if isinstance(value, dict):
        assert FORBIDDEN_KEYS.isdisjoint(value)
        for key, item in value.items():
            _assert_clean(key)
            _assert_clean(item)
    elif isinstance(value, list):
        for item in value:
            _assert_clean(item)
    elif isinstance(value, str):
        assert unicodedata.is_normalized("NFC", value)
        assert not any(ord(c) < 0x20 and c not in "\t\n\r" or 0x7F <= ord(c) <= 0x9F for c in value)
        assert not any("\u202a" <= c <= "\u202e" or "\u2066" <= c <= "\u2069" for c in value)


@settings(database=None, max_examples=300)
@given(value=_JSON, max_depth=st.integers(min_value=1, max_value=6))
def test_clean_tree_property(value: Any, max_depth: int) -> None:
    """Only UnsafeValue or TooDeep escape, and the result is always clean."""
    try:
        result = clean_tree(value, max_depth)
    except (UnsafeValue, TooDeep):
        return
    _assert_clean(result)


class ShortText(Html):
    max_length = 10


class ShortName(SafePath):
    max_length = 8


class Bounded(msgspec.Struct, frozen=True):
    text: ShortText
    name: ShortName = ShortName("a")


def test_dec_hook_enforces_max_length_of_marker_subclasses(hook: Any) -> None:
    """msgspec.Meta cannot bound a custom type; a marker subclass can."""
    ok = msgspec.convert({"text": "<b>hi</b>"}, Bounded, dec_hook=hook, strict=True)
    assert ok.text == "<b>hi</b>"
    assert isinstance(ok.text, ShortText)
    for data, field in (({"text": "x" * 11}, "text"), ({"text": "", "name": "n" * 9}, "name")):
        with pytest.raises(msgspec.ValidationError) as info:
            msgspec.convert(data, Bounded, dec_hook=hook, strict=True)
        assert str(info.value).endswith(f"- at `$.{field}`")
        assert "xxx" not in str(info.value)
    with pytest.raises(msgspec.ValidationError, match="unsafe path"):
        msgspec.convert({"text": "", "name": "../x"}, Bounded, dec_hook=hook, strict=True)
