"""The common case of HTML cleaning without nh3: simple, well-formed markup.

Theory of operation: chat markup is mostly a few inline tags and links
(``<b>``, ``<i>``, ``<a href="https://...">``), properly nested. For such a
string nh3 (html5ever, then ammonia's serializer) changes exactly one thing:
it adds ``rel="noopener noreferrer"`` to each link. :meth:`SimpleHtml.clean`
recognises that subset and writes that output itself, about ten times cheaper
than nh3; for anything else it returns None and the caller runs nh3.

The subset, chosen so that html5ever's tree and serializer give back the input:

* text without ``<``, ``>``, control characters (tab and newline are
  allowed), C1 controls, U+00A0 (written back as ``&nbsp;``), U+FEFF (dropped)
  or surrogates; the only character references are ``&amp;``, ``&lt;``,
  ``&gt;`` and ``&nbsp;``, which decode and encode to themselves;
* start and end tags of :data:`SIMPLE_TAGS` (lowercase, no attributes) that
  the cleaner allows, properly nested and all closed; ``<p>`` only at the top
  level (html5ever closes an open ``<p>`` itself); ``<br>`` with no end tag;
* ``<a href="...">`` with no other attribute, no ``<a>`` inside it, and an
  ``http``/``https`` URL of a plain shape: a host of lowercase letters,
  digits, dots and hyphens whose last label starts with a letter (no IP
  literal, no port, no ``xn--`` label, which the URL parser could refuse, and
  ammonia would then drop the ``href``), then a path of URL characters
  without ``&``, quotes or blanks.

The result is safe by construction whatever nh3 would do: only allowed tags,
no attribute but an http(s) ``href``, text escaped. ``tests/core/test_simple_html.py``
also holds it equal to nh3's output on generated markup, in and out of the subset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Final

__all__ = ["LINK_REL", "SIMPLE_TAGS", "SIMPLE_TAG_ORDER", "SimpleHtml"]

_CClean = Callable[[str, int], "str | None"]
_c_clean: _CClean | None
try:
    # The same in C, built by setup.py when a compiler is there.
    from wsguard.core._simple_html import clean as _c_clean
except ImportError:  # pragma: no cover - a build without the extension
    _c_clean = None

SIMPLE_TAG_ORDER: Final = ("a", "b", "br", "code", "em", "i", "p", "s", "span", "strong", "u")
"""Elements the fast path handles, when the cleaner allows them, in the order
of their bits in the mask of the C function (``_simple_html.c``, ``TAGS``)."""
SIMPLE_TAGS: Final = frozenset(SIMPLE_TAG_ORDER)

# Characters the text may not hold, besides "<", ">" and "&", which clean()
# checks by splitting. Searched only when the text is not printable ASCII.
_BAD_CHAR = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\xa0\ufeff\ud800-\udfff]")
_LINK = re.compile(
    r'a href="https?://(?:(?!xn--)[a-z0-9-]{1,63}\.){0,8}(?!xn--)[a-z][a-z0-9-]{0,62}'
    r'(?:[/?#][A-Za-z0-9._~/?#@!$()*+,;=%:-]{0,1000})?"'
)
LINK_REL: Final = "noopener noreferrer"
"""The ``rel`` every cleaned link gets: HtmlCleaner gives it to nh3, and the
fast path writes it (REL in the C, held equal by the tests)."""
_REL: Final = f' rel="{LINK_REL}"'
_OPEN, _CLOSE, _VOID = 0, 1, 2
_MAX_DEPTH = 64  # open elements; deeper markup goes to nh3 (MAX_DEPTH in the C)


def _references_ok(text: str) -> bool:
    """Every "&" in ``text`` starts &amp; &lt; &gt; or &nbsp; (they cannot overlap)."""
    return text.count("&") == (
        text.count("&amp;") + text.count("&lt;") + text.count("&gt;") + text.count("&nbsp;")
    )


class SimpleHtml:
    """Cleans the simple-markup subset as nh3 would.

    Args:
        tags: the elements the cleaner allows.
        attributes: the attributes it allows, by element (``"*"`` for all).
        url_schemes: the URL schemes it keeps in ``href``.
    """

    __slots__ = ("_links", "_mask", "_tags")

    def __init__(
        self,
        tags: Collection[str],
        attributes: Mapping[str, Collection[str]],
        url_schemes: Collection[str],
    ) -> None:
        simple = SIMPLE_TAGS & set(tags)
        # What is between "<" and ">": "b" opens, "/b" closes, "br" stands alone.
        # Links are matched by _LINK, never by this table.
        self._tags: dict[str, tuple[int, str]] = {}
        for tag in simple - {"a"}:
            self._tags[tag] = (_VOID if tag == "br" else _OPEN, tag)
        for tag in simple - {"br"}:
            self._tags["/" + tag] = (_CLOSE, tag)
        href = "href" in attributes.get("a", ()) or "href" in attributes.get("*", ())
        self._links = "a" in simple and href and {"http", "https"} <= set(url_schemes)
        allowed = (simple - {"a"}) | ({"a"} if self._links else set())
        self._mask = sum(1 << bit for bit, tag in enumerate(SIMPLE_TAG_ORDER) if tag in allowed)

    def clean(self, text: str) -> str | None:
        """The cleaned text, or None when ``text`` is outside the subset."""
        if _c_clean is None:  # pragma: no cover - a build without the extension
            return self.py_clean(text)
        return _c_clean(text, self._mask)

    def py_clean(self, text: str) -> str | None:
        """:meth:`clean` in Python: the fallback, and the C function's reference."""
        if not (text.isascii() and text.isprintable()) and _BAD_CHAR.search(text) is not None:
            return None
        pieces = text.split("<")
        head = pieces[0]
        if ">" in head or ("&" in head and not _references_ok(head)):
            return None
        open_tags: list[str] = []
        changed = False
        tags = self._tags
        for index in range(1, len(pieces)):
            # Each piece is a tag up to ">", then text up to the next "<".
            tag, closed, rest = pieces[index].partition(">")
            if not closed or ">" in rest or ("&" in rest and not _references_ok(rest)):
                return None
            known = tags.get(tag)
            if known is not None and known[0] == _CLOSE:
                if not open_tags or open_tags.pop() != known[1]:
                    return None
                continue
            if len(open_tags) == _MAX_DEPTH and (known is None or known[0] == _OPEN):
                return None
            if known is None:
                if not self._links or "a" in open_tags or _LINK.fullmatch(tag) is None:
                    return None
                open_tags.append("a")
                pieces[index] = tag + _REL + ">" + rest
                changed = True
            elif known[0] == _OPEN:
                if known[1] == "p" and open_tags:
                    return None  # html5ever would close or move it
                open_tags.append(known[1])
        if open_tags:
            return None
        return "<".join(pieces) if changed else text
