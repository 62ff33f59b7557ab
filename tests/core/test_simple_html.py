"""Tests for the simple-markup fast path of HTML cleaning (core/simple_html.py).

Whatever the fast path accepts, it must answer exactly as nh3 with the same
settings; whatever it declines goes to nh3. Attacks are declined or come out
without anything active.
"""

from __future__ import annotations

import nh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.common import MARKUP_TEXT
from wsguard.core import _simple_html, simple_html
from wsguard.core.sanitize import DEFAULT_ATTRIBUTES, DEFAULT_TAGS, URL_SCHEMES, HtmlCleaner
from wsguard.core.simple_html import SIMPLE_TAG_ORDER, SIMPLE_TAGS, SimpleHtml

NH3 = nh3.Cleaner(
    tags=set(DEFAULT_TAGS),
    attributes={"a": {"href"}, "*": set()},
    url_schemes=set(URL_SCHEMES),
    link_rel="noopener noreferrer",  # written out: a change to LINK_REL must fail here
)
SIMPLE = SimpleHtml(DEFAULT_TAGS, {**DEFAULT_ATTRIBUTES, "*": frozenset()}, URL_SCHEMES)


def _agrees(text: str, simple: SimpleHtml = SIMPLE) -> str | None:
    """The fast path's answer, checked against nh3's when it gives one, and the C
    function's against the Python reference."""
    fast = simple.clean(text)
    assert fast == simple.py_clean(text), text
    if fast is not None:
        assert fast == NH3.clean(text), text
    return fast


def test_the_cleaner_uses_the_extension() -> None:
    """The package was built with the C function (make test needs gcc)."""
    assert simple_html._c_clean is _simple_html.clean


ACCEPTED = [
    MARKUP_TEXT,
    "<b>bold</b> and <i>italic</i>",
    "<p>one</p><p>two</p>",
    "<p>a<br>b</p>",
    "<strong><em>x</em></strong>",
    "<b><b><b><b><b>deep</b></b></b></b></b>",
    "<code>x &lt; y &amp;&amp; y &gt; z</code>",
    "a&nbsp;b",
    " lead\n\t<b>x</b> \"quoted\" 'single' ",
    '<a href="https://example.com">x</a>',
    '<a href="http://a-b.example.org/p/a_t.h?q=1;r=2#frag">x</a>',
    '<a href="https://example.com/%zz">lenient</a>',
    '<b><a href="https://x.io">in bold</a></b>',
    "Grüße <b>aus</b> Köln 😀",
    "<b></b><p></p><span>s</span><s>t</s><u>u</u>",
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_simple_markup_takes_the_fast_path_with_nh3s_output(text: str) -> None:
    assert _agrees(text) is not None


DECLINED = [
    "<script>alert(1)</script>",
    "<b onclick=alert(1)>x</b>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JAVASCRIPT:alert(1)">x</a>',
    '<a href=" https://x.io">x</a>',
    '<a href="https://x.io" onclick="x">x</a>',
    "<a href='https://x.io'>x</a>",
    '<a href="https://">empty host</a>',
    '<a href="https://999.1.1.1/">bad IPv4</a>',
    '<a href="https://xn--zz/">bad punycode</a>',
    '<a href="https://a.xn--zz/">bad punycode</a>',
    '<a href="https://a..b/">an empty label, which nh3 keeps</a>',
    '<a href="https://a.com:99999/">bad port</a>',
    '<a href="mailto:a@b.c">mail</a>',
    '<a href="https://x.io"><a href="https://y.io">nested</a></a>',
    "<a>no href</a>",
    "<B>upper</B>",
    "<b>unclosed",
    "</b>stray",
    "<b><i>misnested</b></i>",
    "<p><p>x</p></p>",
    "<b><p>block in inline</p></b>",
    "</br>",
    "<br/>",
    "<img src=x onerror=alert(1)>",
    "<!-- comment -->",
    "Tom & Cat",
    "&quot;",
    "&#60;script&#62;",
    "a > b",
    "a < b",
    "a\xa0b",
    "\ufeffbom <b>x</b>",
    "cr\r\n<b>x</b>",
    "<ul><li>x</li></ul>",
    "<blockquote>q</blockquote>",
]


@pytest.mark.parametrize("text", DECLINED)
def test_anything_else_goes_to_nh3(text: str) -> None:
    assert SIMPLE.clean(text) is None
    assert SIMPLE.py_clean(text) is None


def test_the_cleaner_answers_as_nh3_on_both_paths() -> None:
    cleaner = HtmlCleaner()
    for text in ACCEPTED + DECLINED:
        if "<" in text or "&" in text:  # other text is returned as it is
            assert cleaner.clean(text) == NH3.clean(text), text


def test_the_fast_path_follows_the_cleaners_settings() -> None:
    """A tag or attribute the cleaner does not allow is left to nh3."""
    no_bold = SimpleHtml({"i", "a"}, {"a": {"href"}}, URL_SCHEMES)
    assert no_bold.clean("<b>x</b>") is None
    assert no_bold.clean("<i>x</i>") == "<i>x</i>"
    no_href = SimpleHtml(DEFAULT_TAGS, {"*": set()}, URL_SCHEMES)
    assert no_href.clean('<a href="https://x.io">x</a>') is None
    star_href = SimpleHtml(DEFAULT_TAGS, {"*": {"href"}}, URL_SCHEMES)
    assert star_href.clean('<a href="https://x.io">x</a>') is not None
    no_http = SimpleHtml(DEFAULT_TAGS, {"a": {"href"}}, {"https", "mailto"})
    assert no_http.clean('<a href="https://x.io">x</a>') is None
    cleaner = HtmlCleaner(tags={"i"})
    assert cleaner.clean("<b>x</b> <i>y</i>") == "x <i>y</i>"


@pytest.mark.parametrize("tag", SIMPLE_TAG_ORDER)
def test_each_tag_follows_its_own_bit(tag: str) -> None:
    """With one tag taken out of the cleaner's list, that tag alone is declined."""
    simple = SimpleHtml(set(SIMPLE_TAGS) - {tag}, {"a": {"href"}}, URL_SCHEMES)
    for other in SIMPLE_TAG_ORDER:
        text = '<a href="https://x.io">x</a>' if other == "a" else f"<{other}>x</{other}>"
        if other == "br":
            text = "x<br>y"
        assert (simple.clean(text) is None) == (other == tag), (tag, other)
        assert simple.clean(text) == simple.py_clean(text)


def test_limits_of_links_and_nesting() -> None:
    """Hosts of 9 labels and paths of 1001 characters are the bounds; 64 levels too."""
    nine = ".".join(["a"] * 9)
    for text in (
        f'<a href="https://{nine}">x</a>',
        f'<a href="https://{nine}.a">x</a>',
        f'<a href="https://{"a" * 63}.io">x</a>',
        f'<a href="https://{"a" * 64}.io">x</a>',
        '<a href="https://x.io/' + "p" * 1000 + '">x</a>',
        '<a href="https://x.io/' + "p" * 1001 + '">x</a>',
        '<a href="https://x.io?q">x</a>',
        '<a href="https://x.io#f">x</a>',
        '<a href="https://x.io.">x</a>',
        '<a href="https://x.9">x</a>',
        "<b>" * 64 + "x" + "</b>" * 64,
        "<b>" * 65 + "x" + "</b>" * 65,
    ):
        _agrees(text)
    assert SIMPLE.clean(f'<a href="https://{nine}">x</a>') is not None
    assert SIMPLE.clean(f'<a href="https://{nine}.a">x</a>') is None
    assert SIMPLE.clean("<b>" * 64 + "x" + "</b>" * 64) is not None
    assert SIMPLE.clean("<b>" * 65 + "x" + "</b>" * 65) is None  # deeper: nh3 decides


def test_wrong_argument_types_are_refused() -> None:
    with pytest.raises(TypeError):
        _simple_html.clean(b"<b>x</b>", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _simple_html.clean("<b>x</b>")  # type: ignore[call-arg]
    with pytest.raises(OverflowError):
        _simple_html.clean("<b>x</b>", -1)


def test_unchanged_text_is_returned_as_is() -> None:
    text = "<b>x</b>"
    assert SIMPLE.clean(text) is text
    assert SIMPLE.py_clean(text) is text
    # Not ASCII: the copy with rel keeps the kind of the text.
    for text in ('<a href="https://x.io">é</a>', '<a href="https://x.io">日😀</a>'):
        cleaned = SIMPLE.clean(text)
        assert cleaned == NH3.clean(text) == SIMPLE.py_clean(text)


_TAGS = sorted(SIMPLE_TAGS | {"ul", "li", "pre", "img", "script", "blockquote"})
_PIECES = [
    *(f"<{tag}>" for tag in _TAGS),
    *(f"</{tag}>" for tag in _TAGS),
    '<a href="https://example.com/x">', '<a href="http://a.b">', '<a href="https://a.b:1">',
    '<a href="https://1.2.3.4">', '<a href="javascript:x">', "<a>", "<br/>", "<B>",
    "&amp;", "&lt;", "&gt;", "&nbsp;", "&quot;", "&#39;", "&", "&amp", "<", ">", "<!--",
    "-->", "x", "hello ", " ", "\n", "\t", "\r", "\xa0", "\ufeff", "é", "😀", '"', "'",
    "\x00", "\x0c", "\x85", "\ufffd", "\uffff",
]  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14).map("".join))
def test_generated_markup_agrees_with_nh3(text: str) -> None:
    _agrees(text)


_HOST = st.from_regex(r"[a-z0-9.\-]{1,12}", fullmatch=True)
_PATH = st.from_regex(r"[A-Za-z0-9._~/?#@!$()*+,;=%:\-]{0,12}", fullmatch=True)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(["http", "https", "ftp"]), _HOST, _PATH, st.text(max_size=6))
def test_generated_links_agree_with_nh3(scheme: str, host: str, path: str, text: str) -> None:
    _agrees(f'<a href="{scheme}://{host}{path}">{text}</a>')


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_text_with_a_tag_agrees_with_nh3(text: str) -> None:
    _agrees(f"<b>{text}</b>")
    _agrees(text + "<i>x</i>")


def test_markup_attacks_come_out_inert() -> None:
    """Through the cleaner, each attack comes out without script or handler."""
    cleaner = HtmlCleaner()
    for text in DECLINED:
        cleaned = cleaner.clean(text).lower()
        assert "<script" not in cleaned and "onerror" not in cleaned
        assert "onclick" not in cleaned and "javascript:" not in cleaned
