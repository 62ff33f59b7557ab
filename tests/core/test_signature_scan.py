"""Tests for the C prefilter of the signature scanner (core/_signature_scan.c).

``first_candidate(text)`` is the first position where a rule could match, or
-1. It may be looser than the rules, never stricter: the scanner starts its
search there, so a match before it would be missed. These tests hold the
search from the candidate equal to the search from the start, on examples and
on generated texts, and check that ordinary text has no candidate at all.
"""

from __future__ import annotations

import re

import nh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.common import MARKUP_TEXT, PLAIN_TEXT, UNICODE_TEXT
from tests.core.test_signatures import BENIGN, POSITIVE
from wsguard.core import _signature_scan, signatures
from wsguard.core.sanitize import HtmlCleaner

PATTERN, GROUPS = signatures._compile()
first_candidate = _signature_scan.first_candidate


def _check(text: str) -> None:
    """The search from the candidate finds what the search from the start finds."""
    lowered = text.lower()
    whole = PATTERN.search(lowered)
    first = first_candidate(lowered)
    if whole is None:
        if first >= 0:
            assert PATTERN.search(lowered, first) is None
        return
    assert 0 <= first <= whole.start(), (text, first, whole.start())
    found = PATTERN.search(lowered, first)
    assert found is not None, text
    assert (found.span(), found.lastgroup) == (whole.span(), whole.lastgroup), text


def test_the_scanner_uses_the_extension() -> None:
    """The package was built with the prefilter (make test needs gcc)."""
    assert signatures.first_candidate is first_candidate


EXAMPLES = [text for texts in POSITIVE.values() for text in texts]


@pytest.mark.parametrize("text", EXAMPLES)
def test_every_known_attack_is_found_from_its_candidate(text: str) -> None:
    """Each attack example of test_signatures, alone and behind ordinary text."""
    for padded in (text, "hello there " + text, "a" + text + " ok", "x.y " + text):
        _check(padded)


@pytest.mark.parametrize("text", EXAMPLES)
def test_no_attack_example_is_lost(text: str) -> None:
    """The rules' own matches (not the blank rules or the NoSQL key) start at or after it."""
    lowered = text.lower()
    found = PATTERN.search(lowered)
    if found is not None:
        assert 0 <= first_candidate(lowered) <= found.start()


ORDINARY = [
    PLAIN_TEXT,
    UNICODE_TEXT,
    "I'll select a table from the shop",
    "drop me a line",
    "C# and F#",
    "email me at a@b.c",
    "it's 50% off",
    "Let's meet at 5:30; ok?",
    "List<Object> items",
    "Tom & Cat are friends",
    "I need sleep (lots of it)",
    "Wait... what? Really...",
    "see https://example.com/path/to/page?q=1&r=2",
    "I'm sure it's fine, isn't it? \"Quoted\" words, (brackets) and {braces}.",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_has_no_candidate(text: str) -> None:
    """Chat text skips re entirely: that is what the prefilter is for."""
    assert first_candidate(text.lower()) == -1


def test_cleaned_markup_has_no_candidate() -> None:
    """The benchmark's markup, as nh3 leaves it, skips re too."""
    cleaned = HtmlCleaner().clean(MARKUP_TEXT)
    assert cleaned != MARKUP_TEXT  # nh3 added rel="noopener noreferrer"
    assert first_candidate(cleaned.lower()) == -1
    assert first_candidate(nh3.clean("<b>bold</b> &amp; <i>it</i>").lower()) == -1


@pytest.mark.parametrize("text", BENIGN)
def test_benign_examples_agree(text: str) -> None:
    _check(text)


# Pieces of the rules and their near misses: the first words after each
# anchor, the blank classes with their Unicode members, digits of other
# scripts, case variants that lower() folds.
_PIECES = sorted(
    {
        *"<>:'\"u;|&`(.%/${}#*@=-_!\\ \t\n)",
        "\u00a0", "\u2003", "\x1c", "\u3000", "\u0663", "\uff11", "K", "İ", "é", "日",
        "javascript", "vbscript", "data", "text/html", "c", "windows", "t", "a", "on",
        "onload", "onxx", "script", "iframe", "img", "src=x", "svg", "%=", "or", "and",
        "||", "&&", "--", "/*", "*/", "__", "__class__", "$ne", "where", "waitfor delay ",
        "0", "1", "nion ", "union ", "select", "all ", "drop", "table", "truncate", "alter",
        "delete", "from", "insert", "into", "shutdown", "exec", "xp_", "rm", "-rf", "nc",
        "netcat", "curl", "cat", "chmod", "chown", "wget", "bash", "zsh", "sh", "-c", "ls",
        "id", "whoami", "uname", "-a", "python", "perl", "php", "powershell", "ruby", "-e",
        "attr", "ping", "sleep", "echo", "printf", "base64", "benchmark", "java.", "ini",
        "boot", "win", "2e", "2f", "5c", "25", "c0", "c1", "%a", "9c", "24", "7b", "etc",
        "passwd", "proc", "self", "bin", "ifs", "jndi", "lower", "::-", "config", "7*7",
        "x", " ", "  ", ".", "..", "/", "%2e", "%2f", "%252e", "%c0%ae", "{{", "${", "#{",
        "globals", "mro", "http://", "-o", "Hello ", "there",
    }
)  # fmt: skip


@settings(max_examples=4000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=16).map("".join))
def test_generated_texts_agree(text: str) -> None:
    _check(text)


_FRAGMENTS = sorted(
    {text[i : i + size] for text in EXAMPLES for size in (1, 2, 3, 5, 8) for i in range(len(text))}
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=10).map("".join))
def test_recombined_attack_fragments_agree(text: str) -> None:
    _check(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_agrees(text: str) -> None:
    _check(text)


# Attacks built rule by rule at the edges of what each check allows: every
# blank class (Unicode ones included) in runs up to the possessive limits,
# digits of other scripts, every first word. Each one is a match.
_BLANKS = (" ", "\t", "\u00a0", "\u2003", "\x1c", "\u3000")
_AFTER_SEPARATOR = (
    "rm -rf", "nc -e", "ncat x", "netcat x", "curl -o", "curl http://x", "cat /etc",
    "chmod +x", "chown x", "wget -q", "bash -c", "zsh -i", "sh -c", "ls /", "id", "id;",
    "whoami", "uname -a", "python -c", "python3 -e", "perl -e", "php -r", "powershell",
    "ruby -e",
)  # fmt: skip
_SHELL_WORDS = (
    "cat", "ls", "id", "whoami", "uname", "curl", "wget", "nc", "ncat", "netcat", "bash",
    "sh", "zsh", "rm", "ping", "sleep", "echo", "printf", "python", "python3", "perl",
    "php", "ruby", "base64", "chmod", "powershell",
)  # fmt: skip
_DIGITS = ("5", "\u0665", "\uff15")
_TEMPLATE_GLOBALS = (
    "config", "self", "request", "lipsum", "cycler", "joiner", "namespace", "url_for",
    "get_flashed_messages",
)  # fmt: skip
_LOOKUPS = (
    "jndi", "env", "sys", "lower", "upper", "date", "java", "main", "ctx", "base64", "k8s",
    "docker", "spring", "bundle", "web", "log4j", "marker", "sd", "map", "event",
)  # fmt: skip


def _edge_attacks() -> list[str]:
    attacks: list[str] = []
    for blank in _BLANKS:
        for count in (0, 1, 5):
            gap = blank * count
            attacks += [f"|{gap}{word}" for word in (*_AFTER_SEPARATOR, "sh;", "bash", "attr(")]
            attacks += [f"x&&{gap}{word}" for word in _AFTER_SEPARATOR]
            attacks += [f"`{gap}{word} x`" for word in _SHELL_WORDS]
            attacks += [f"$({gap}{word}" for word in _SHELL_WORDS]
        for count in (0, 1, 9, 10):
            gap = blank * count
            attacks += [
                f"x;{gap}{word}"
                for word in (
                    *_AFTER_SEPARATOR, "drop table", "truncate table", "alter user",
                    "delete from", "insert into", "shutdown", "exec xp_", "execute xp_",
                )
            ]  # fmt: skip
        for count in (0, 1, 12, 13):
            for gap in (blank * count, ")" * count, ";" * count):
                rests = ["or 1=1", "and 1=1", "|| 1=1", "&& 1=1", "__class__'"]
                rests += [f"${op}':" for op in sorted(signatures._NOSQL_OPERATORS)]
                if not gap.strip(");"):  # a comment right after the quote, ")" or ";"
                    rests += ["--", "/* x", "# x"]
                attacks += [f"x{quote}{gap}{rest}" for quote in "'\"" for rest in rests]
        attacks += [f"{{{{{blank}config", f"{{{{{blank}7*7}}}}", f"${{{blank}7*7}}"]
        for count in (0, 1, 4, 5):
            gap = blank * count
            attacks += [f"{{{{{gap}{word}" for word in _TEMPLATE_GLOBALS]
            attacks += [f"${{{gap}{word}:" for word in _LOOKUPS]
            attacks += [f"${{{gap}::-j", f"{{{{7{gap}*7}}}}", f"{{{{7*{gap}7}}}}"]
            attacks += [f"${{{gap}77*7}}", f"#{{7{'7' * 10}{gap}+1}}"]
            attacks += [f"{{{{7{gap}{op}7}}}}" for op in "*+-/%"]
        attacks += [f"${{{'a' * count}${{" for count in (0, 1, 19, 20)]
        attacks += [f"${{a{blank}\x00b${{"]
    for digit in _DIGITS:
        attacks += [f"sleep({digit})", f"benchmark({digit}0,x)", f"waitfor delay '{digit}"]
        attacks += [f"{{{{{digit}*7}}}}", f"${{{digit}*7}}", f"#{{{digit}+1}}"]
        attacks += [f"*{{{digit}*7}}", f"@{{{digit}*7}}"]
    attacks += [
        "<script", "<iframe", "<%=", "javascript:x", "vbscript:", "data:text/html",
        "c:\\windows", "c:/windows", "1 union select", "../", "..\\", "..%2f", "%2e%2e/",
        "%252e%252e/", "%c0%ae", "%c1%9c", "%24%7bjndi", "boot.ini", "win.ini",
        "x.__class__.__mro__", "x.__globals__", "/**/", "/*!5", "union/**/select", "/etc/passwd",
        "/proc/self/", "/bin/sh", "${ifs}", "${jndi:", "${::-j}", "${${", "$where",
        "t(java.lang", "{{self}}",
    ]  # fmt: skip
    return attacks


EDGE_ATTACKS = _edge_attacks()


def test_edge_attacks_are_found_from_their_candidate() -> None:
    assert len(EDGE_ATTACKS) > 3000
    for text in EDGE_ATTACKS:
        assert PATTERN.search(text.lower()) is not None, text  # each one is an attack
        _check(text)
        _check("hello " + text)


def test_the_window_of_an_event_handler_stops_at_brackets() -> None:
    """Inside "<tag ... on...=", the window is at most 200 characters and stops at < or >."""
    # "a", then the window: " " and 199 "x" (200 characters), then the blank.
    assert first_candidate("<a " + "x" * 199 + " onclick=") == 0
    assert first_candidate("<a " + "x" * 200 + " onclick=") == -1
    assert first_candidate("<a > onclick=") == -1
    assert first_candidate("<a <b onclick=") == 3  # the window of "<a" ends at "<b"
    for size in (198, 199, 200, 201):
        _check("<a " + "x" * size + " onclick=1")
    assert PATTERN.search("<a " + "x" * 199 + " onclick=1") is not None
    assert PATTERN.search("<a " + "x" * 200 + " onclick=1") is None


def test_every_anchor_of_the_pattern_is_known_to_the_prefilter() -> None:
    """Each top-level alternative of the pattern starts with a character that the C
    code treats as an anchor: a rule added under a new anchor fails here."""
    anchors = "".join(anchor for anchor, _, _ in signatures._ANCHORS)
    assert sorted(anchors) == sorted(set(anchors))
    for anchor in anchors:
        assert re.escape(anchor) in PATTERN.pattern
    # Every anchor followed by what one of its rules needs is a candidate.
    samples = {
        "<": "<script", ":": "javascript:x", "'": "' or", '"': '" or', "u": "union ",
        ";": "; drop", "|": "| sh", "&": "&& id", "`": "`id", "(": "sleep(1",
        ".": "../", "%": "%2e", "/": "/etc/", "$": "$(", "{": "{{config",
    }  # fmt: skip
    assert sorted(samples) == sorted(anchors)
    for anchor, sample in samples.items():
        assert first_candidate(sample) == sample.index(anchor), anchor


def test_wrong_argument_types_are_refused() -> None:
    with pytest.raises(TypeError):
        first_candidate(b"abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        first_candidate()  # type: ignore[call-arg]
