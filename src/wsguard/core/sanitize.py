"""Sanitization of decoded messages: strings, keys, nesting, HTML and paths.

Theory of operation:

* :func:`clean_tree` runs on every decoded envelope, so it is built around the
  common case, a small tree of short ASCII strings that needs no change. It
  walks the tree once, recursing only into containers, and returns the input
  objects themselves when nothing changed: a container is copied only from the
  first item that changed (or the first forbidden key), never before.
* Strings take a fast path when ASCII and printable (two C-level scans, no
  normalisation); otherwise one precompiled regex refuses control, bidi and
  lone-surrogate characters and :func:`unicodedata.normalize` makes them NFC.
* The JSON path of a refused string is not tracked on the way down. The error
  collects keys and indexes while it unwinds (``try`` costs nothing in 3.11
  until it raises) and the path text is built once, at the top.
* Nesting is bounded by ``max_depth`` before recursing, so a deep input raises
  :exc:`TooDeep` long before Python's recursion limit.
* Schema fields typed :class:`Html` or :class:`SafePath` are handled by the
  msgspec ``dec_hook`` from :func:`make_dec_hook`: the first is cleaned by one
  reused nh3 cleaner, the second is refused when it could leave its directory.

Errors never include the refused value: it is the attacker's text, and both the
log and the client's error frame receive ``str(error)``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import nh3

from wsguard.core.simple_html import LINK_REL, SimpleHtml
from wsguard.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_ATTRIBUTES",
    "DEFAULT_TAGS",
    "FORBIDDEN_KEYS",
    "URL_SCHEMES",
    "Html",
    "HtmlCleaner",
    "SafePath",
    "TooDeep",
    "UnsafeValue",
    "check_safe_path",
    "clean_tree",
    "make_dec_hook",
]

FORBIDDEN_KEYS: frozenset[str] = frozenset({"__proto__", "constructor", "prototype"})
"""Keys removed at every depth: they pollute JavaScript prototypes when a
client or a Node.js peer merges the object."""

# C0 controls except \t \n \r, DEL, C1 controls, the bidi embeddings/overrides
# (U+202A..U+202E) and isolates (U+2066..U+2069), and lone surrogates (the stdlib
# JSON decoder accepts "\ud800", which then fails to encode as UTF-8 later).
# The non-ASCII part is shared with the envelope's fast path, which must send
# every frame holding one of these to this check.
REFUSED_NON_ASCII = r"\x80-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_REFUSED_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f" + REFUSED_NON_ASCII + "]")

# Keys written as ``.key`` in a path; any other key is quoted as ``["key"]``.
_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]{0,63}")
_MAX_QUOTED_KEY = 64


# Errors.


class UnsafeValue(ValueError):
    """A string was refused.

    ``str()`` gives the reason and the path, never the refused value.

    Args:
        reason: a fixed short text, such as ``"control character"``.
        path: the JSON path of the value, such as ``"$.payload.items[2].name"``.
            A refused key is reported at the path of its object.
    """

    def __init__(self, reason: str, path: str = "$") -> None:
        super().__init__(reason, path)
        self.reason = reason
        self.path = path

    def __str__(self) -> str:
        return f"{self.reason} at {self.path}"


class TooDeep(ValueError):
    """Nesting deeper than allowed.

    Args:
        max_depth: the limit that was exceeded.
    """

    def __init__(self, max_depth: int) -> None:
        super().__init__(max_depth)
        self.max_depth = max_depth

    def __str__(self) -> str:
        return f"nesting deeper than {self.max_depth}"


class _Refused(Exception):
    """Internal: a refusal unwinding through the tree, collecting its path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pieces: list[str | int] = []  # innermost first


# Strings and trees.


def _refusal_reason(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "lone surrogate"
    if code >= 0x202A:
        return "bidirectional control character"
    return "control character"


def _clean_str(text: str) -> str:
    """NFC-normalise ``text``, or raise :exc:`_Refused` for a refused character."""
    if text.isascii():
        # Printable ASCII is the common case; \t \n \r are not "printable".
        if text.isprintable():
            return text
        found = _REFUSED_CHAR.search(text)
        if found is not None:
            raise _Refused(_refusal_reason(found.group()))
        return text
    found = _REFUSED_CHAR.search(text)
    if found is not None:
        raise _Refused(_refusal_reason(found.group()))
    # normalize() returns its argument when it is already NFC.
    return unicodedata.normalize("NFC", text)


def _clean_key(key: Any) -> str:
    if not isinstance(key, str):
        raise _Refused("non-string key")
    return _clean_str(key)


def _copy_until(obj: dict[Any, Any], stop: Any) -> dict[Any, Any]:
    """Copy the items of ``obj`` that come before the key ``stop``.

    Called on the first change in an object: every earlier item was kept as is.
    """
    out: dict[Any, Any] = {}
    for key, item in obj.items():
        if key is stop:
            break
        out[key] = item
    return out


def _clean_dict(obj: dict[Any, Any], depth: int, max_depth: int) -> dict[Any, Any]:
    if depth > max_depth:
        raise TooDeep(max_depth)
    child = depth + 1
    out: dict[Any, Any] | None = None
    for key, item in obj.items():
        if type(key) is str and key.isascii() and key.isprintable():
            new_key = key
        else:
            # A refused key is reported at this object's path: the key is the value.
            new_key = _clean_key(key)
        if new_key in FORBIDDEN_KEYS:
            # Dropped with its value, which is therefore not walked.
            if out is None:
                out = _copy_until(obj, key)
            continue
        try:
            kind = type(item)
            if kind is str:
                new_item = item if item.isascii() and item.isprintable() else _clean_str(item)
            elif kind is dict:
                new_item = _clean_dict(item, child, max_depth)
            elif kind is list:
                new_item = _clean_list(item, child, max_depth)
            elif kind is int or kind is float or kind is bool or item is None:
                new_item = item
            else:
                new_item = _clean_other(item, child, max_depth)
        except _Refused as exc:
            exc.pieces.append(new_key)
            raise
        if out is None:
            if new_key is key and new_item is item:
                continue
            out = _copy_until(obj, key)
        if new_key in out:
            # Two keys became one after NFC: refuse, as the decoder refuses duplicates.
            raise _Refused("duplicate key after normalisation")
        out[new_key] = new_item
    return obj if out is None else out


def _clean_list(obj: list[Any], depth: int, max_depth: int) -> list[Any]:
    if depth > max_depth:
        raise TooDeep(max_depth)
    child = depth + 1
    out: list[Any] | None = None
    for index, item in enumerate(obj):
        try:
            kind = type(item)
            if kind is str:
                new_item = item if item.isascii() and item.isprintable() else _clean_str(item)
            elif kind is dict:
                new_item = _clean_dict(item, child, max_depth)
            elif kind is list:
                new_item = _clean_list(item, child, max_depth)
            elif kind is int or kind is float or kind is bool or item is None:
                new_item = item
            else:
                new_item = _clean_other(item, child, max_depth)
        except _Refused as exc:
            exc.pieces.append(index)
            raise
        if out is None:
            if new_item is item:
                continue
            out = obj[:index]
        out.append(new_item)
    return obj if out is None else out


def _clean_other(value: Any, depth: int, max_depth: int) -> Any:
    """The slow path: subclasses of the JSON types; anything else is refused."""
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return _clean_dict(value, depth, max_depth)
    if isinstance(value, list):
        return _clean_list(value, depth, max_depth)
    # Fail closed on values a JSON decoder cannot produce.
    raise _Refused("unsupported type")


def join_path(root: str, pieces: list[str | int]) -> str:
    """A JSON path from ``root`` and keys/indexes collected innermost first."""
    parts = [root]
    for piece in reversed(pieces):
        if isinstance(piece, int):
            parts.append(f"[{piece}]")
        elif _PLAIN_KEY.fullmatch(piece):
            parts.append(f".{piece}")
        elif len(piece) <= _MAX_QUOTED_KEY:
            parts.append(f"[{json.dumps(piece)}]")  # ASCII-escaped
        else:
            parts.append("[...]")
    return "".join(parts)


def clean_tree(value: Any, max_depth: int, path: str = "$") -> Any:
    """Clean a decoded JSON value.

    Call it on the output of a JSON decoder, before the value reaches a schema
    or a handler. Keys in :data:`FORBIDDEN_KEYS` are removed from every object;
    every string, keys included, is NFC-normalised; strings holding control
    characters other than tab, newline and carriage return, bidi embedding,
    override or isolate characters, or lone surrogates are refused.

    Args:
        value: a dict, list, str, int, float, bool or None, nested.
        max_depth: the deepest container allowed; the top-level value is at
            depth 1. Keep it well below :func:`sys.getrecursionlimit`.
        path: the JSON path of ``value``, used as the prefix of error paths.

    Returns:
        The cleaned value. Containers that needed no change are returned as
        they are, not copied.

    Raises:
        UnsafeValue: for a refused string or key, with its JSON path.
        TooDeep: for a container nested deeper than ``max_depth``.
    """
    try:
        kind = type(value)
        if kind is dict:
            return _clean_dict(value, 1, max_depth)
        if kind is list:
            return _clean_list(value, 1, max_depth)
        if kind is str:
            return _clean_str(value)
        if kind is int or kind is float or kind is bool or value is None:
            return value
        return _clean_other(value, 1, max_depth)
    except _Refused as exc:
        raise UnsafeValue(exc.reason, join_path(path, exc.pieces)) from None
    except RecursionError:
        # Only reachable with a max_depth near the recursion limit: fail closed.
        raise TooDeep(max_depth) from None


# Schema markers.


class Html(str):
    """Schema marker: a field of this type is cleaned as HTML.

    ``msgspec.Meta(max_length=...)`` cannot annotate a custom type, so bound
    the length with a subclass, checked before cleaning::

        class ChatText(Html):
            max_length = 4000
    """

    __slots__ = ()
    max_length: ClassVar[int | None] = None


class SafePath(str):
    """Schema marker: a file name or relative path; refused when unsafe.

    Subclass it to set ``max_length``, as for :class:`Html`.
    """

    __slots__ = ()
    max_length: ClassVar[int | None] = None


# HTML.

DEFAULT_TAGS: frozenset[str] = frozenset(
    {
        "a",
        "b",
        "blockquote",
        "br",
        "code",
        "em",
        "i",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "span",
        "strong",
        "u",
        "ul",
    }
)
"""Inline formatting, lists, quotes and links: no forms, media or styles."""

DEFAULT_ATTRIBUTES: Mapping[str, frozenset[str]] = MappingProxyType({"a": frozenset({"href"})})
"""Only links carry an attribute; nh3 adds ``rel="noopener noreferrer"``."""

URL_SCHEMES: frozenset[str] = frozenset({"http", "https", "mailto"})
"""URL schemes kept in ``href``; ``javascript:``, ``data:`` and the rest are dropped."""

# nh3 removes these elements with their content; allowing one makes it panic.
_CONTENT_TAGS = frozenset({"script", "style"})


class HtmlCleaner:
    """Cleans HTML fragments with one reusable :class:`nh3.Cleaner`.

    Build it once at startup: building the nh3 cleaner is the expensive part.

    Args:
        tags: the elements kept; others are removed but their text is kept
            (except ``script`` and ``style``, removed with their content).
        attributes: the attributes kept, by element (``"*"`` for every element);
            default: ``href`` on ``a``. ``rel`` is always set by the cleaner and
            cannot be allowed.

    Raises:
        ConfigurationError: for ``script``/``style`` in ``tags``, or ``rel``
            in ``attributes``.
    """

    __slots__ = ("_cleaner", "_simple")

    def __init__(
        self,
        tags: Iterable[str] = DEFAULT_TAGS,
        attributes: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        tag_set = set(tags)
        if tag_set & _CONTENT_TAGS:
            raise ConfigurationError("html tags", "script and style cannot be allowed")
        chosen = DEFAULT_ATTRIBUTES if attributes is None else attributes
        allowed = {tag: set(names) for tag, names in chosen.items()}
        # "*" lists attributes allowed on every element; without it nh3 keeps
        # its own default (title, lang). Allow none unless asked to.
        allowed.setdefault("*", set())
        try:
            self._cleaner = nh3.Cleaner(
                tags=tag_set,
                attributes=allowed,
                url_schemes=set(URL_SCHEMES),
                link_rel=LINK_REL,
            )
        except ValueError as exc:
            raise ConfigurationError("html attributes", str(exc)) from exc
        self._simple = SimpleHtml(tag_set, allowed, URL_SCHEMES)

    def clean(self, text: str) -> str:
        """Return ``text`` as safe HTML.

        Text with no ``<`` and no ``&`` holds no markup or entity and is
        returned unchanged, without calling nh3 (a lone ``>`` is valid HTML
        text). Otherwise the result is nh3's output, so a bare ``&`` becomes
        ``&amp;``; simple well-formed markup (inline tags, plain links) gets
        the same output from :class:`~wsguard.core.simple_html.SimpleHtml`,
        without nh3.
        """
        if "<" not in text and "&" not in text:
            return text
        simple = self._simple.clean(text)
        return self._cleaner.clean(text) if simple is None else simple


# Paths.

# Any percent-encoding is refused outright, including harmless ones such as
# "%20": decoding happens in too many layers (proxies, frameworks, storage
# SDKs) to reason about which one sees "%2e%2e%2f", "%252e" or "%c0%ae". A '%'
# not followed by two hex digits ("100% done.txt") is allowed. IIS "%u002e"
# forms are refused too.
_PERCENT_ENCODED = re.compile(r"%(?:[0-9A-Fa-f]{2}|[Uu][0-9A-Fa-f]{4})")
# Slash look-alikes that NFKC leaves alone but "best fit" code-page
# conversions (Windows) can turn into '/' or '\'.
_LOOKALIKE_SEPARATOR = re.compile(r"[\u2044\u2215\u2216\u29f5\u29f8\u29f9]")
_SEPARATORS = re.compile(r"[/\\]")


def _path_problem(text: str) -> str | None:
    """The reason ``text`` is unsafe as a relative path, or None."""
    if not text:
        return "empty path"
    if _REFUSED_CHAR.search(text) is not None:
        return "control character in path"
    if _PERCENT_ENCODED.search(text) is not None:
        return "percent-encoded character in path"
    if _LOOKALIKE_SEPARATOR.search(text) is not None:
        return "look-alike separator in path"
    if text[0] in "/\\":
        return "absolute path"
    # Drive letters ("C:"), alternate data streams ("a.txt:x") and URL schemes.
    if ":" in text:
        return "colon in path"
    for segment in _SEPARATORS.split(text):
        if not segment:
            return "empty path segment"
        # Windows drops trailing dots and spaces, so "..", "... " and ". " all
        # name the parent or current directory (or nothing).
        if not segment.rstrip(". "):
            return "dot segment in path" if "." in segment else "blank path segment"
    return None


def check_safe_path(text: str) -> str:
    """Check a client-supplied file name or relative path.

    The text is checked as sent and after NFKC normalisation, which folds
    full-width and other compatibility forms ("．．／", "‥") into ASCII.
    Refused: empty text or segments; a ``..`` (or other dot-only) segment,
    with ``/`` or ``\\`` as separator; a leading ``/`` or ``\\`` (absolute and
    UNC paths); any ``:`` (drive letters, streams, schemes); control, bidi and
    NUL characters; slash look-alikes; and any ``%`` followed by two hex digits
    (see the note on ``_PERCENT_ENCODED``). Dots inside a name ("a..b.txt")
    are fine.

    Args:
        text: the path as received.

    Returns:
        ``text`` itself, unchanged.

    Raises:
        UnsafeValue: with a fixed reason; the path is not included.
    """
    problem = _path_problem(text)
    if problem is None and not text.isascii():
        problem = _path_problem(unicodedata.normalize("NFKC", text))
    if problem is not None:
        raise UnsafeValue(problem)
    return text


# msgspec integration.


def _bounded_str(obj: Any, max_length: int | None) -> str:
    # In strict mode msgspec hands the hook whatever JSON value it found.
    if not isinstance(obj, str):
        raise TypeError("expected a string")
    if max_length is not None and len(obj) > max_length:
        raise ValueError(f"expected a string of at most {max_length} characters")
    return obj


def make_dec_hook(cleaner: HtmlCleaner) -> Callable[[type, Any], Any]:
    """Build the msgspec ``dec_hook`` for :class:`Html` and :class:`SafePath`.

    Pass it to ``msgspec.convert(..., dec_hook=hook)``. The hook's
    ``TypeError``/``ValueError`` become a :exc:`msgspec.ValidationError` that
    ends with the field's path, e.g. ``unsafe path: dot segment in path - at
    `$.name```; the value is never part of the message.

    Subclasses of the markers are handled too, and their ``max_length`` is
    enforced before cleaning.

    Args:
        cleaner: the cleaner used for :class:`Html` fields.

    Returns:
        The hook.
    """

    def dec_hook(type_: type, obj: Any) -> Any:
        if isinstance(type_, type):
            if issubclass(type_, Html):
                return type_(cleaner.clean(_bounded_str(obj, type_.max_length)))
            if issubclass(type_, SafePath):
                text = _bounded_str(obj, type_.max_length)
                try:
                    return type_(check_safe_path(text))
                except UnsafeValue as exc:
                    raise ValueError(f"unsafe path: {exc.reason}") from None
        # msgspec's convention for "this hook does not handle that type".
        raise NotImplementedError

    return dec_hook
