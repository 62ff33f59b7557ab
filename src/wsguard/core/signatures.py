"""Attack signatures: one compiled pattern set over the strings of a message.

Theory of operation:

* :class:`SignatureScanner` compiles one regular expression: a list of rules,
  each ending with an empty named group that maps to its category (one of
  :data:`CATEGORIES`). :meth:`SignatureScanner.scan_text` lowercases the text
  and calls ``search()`` once, so the first match in the text wins. The
  shape of the pattern, and why it is not one group per category with
  :data:`re.IGNORECASE`, is explained above ``_ANCHORS``.
* :meth:`SignatureScanner.scan` walks a decoded message (dicts, lists,
  tuples, :class:`msgspec.Struct`) and scans every string, keys included.
  Strings shorter than 3 characters are skipped: no rule can match them.
  The JSON path of a match is built once, while the walk unwinds, as in
  :mod:`wsguard.core.sanitize`.
* A match is a *signal*, not proof: ``SignatureConfig.action`` decides whether
  it adds to the anomaly score (the default) or refuses the message.

Backtracking. Python's :mod:`re` backtracks, so every pattern here is written
to run in time linear in the text (``benchmarks/redos.py`` checks it on 64 KiB
adversarial strings):

* every rule starts with a symbol (an *anchor*), a literal blank and word
  (" or", " and") or the word "union", so most positions are skipped without
  entering the pattern, and under an anchor every rule starts with a literal
  or a character class, so most rules fail on it;
* every repetition is bounded (``{0,20}``, never ``*`` or ``+``), and two
  repetitions next to each other match disjoint characters (``\\s`` then
  ``\\w``), or are separated by a literal, so that they cannot trade
  characters while backtracking;
* a window between two tokens (``<tag ... onerror=``) excludes the character
  that starts the pattern (``[^<>]{0,200}``): windows from two starting points
  never overlap, so a long run of starts costs one pass, not one per start;
* no nested quantifiers, and alternatives under a repetition start with
  different characters.

The cost is therefore a constant per anchor character: about 60-200 ns with
CPython 3.11's engine, so that 64 KiB made only of anchors ("$$$...",
"' or ' or ...") takes 5-9 ms, and 64 KiB of ordinary text about 1 ms.

False positives. The patterns are written against ordinary chat text; for
example none of these match: "I'll select a table from the shop", "drop me a
line", "1 < 2 and 3 > 2", "C# and F#", "email me at a@b.c", "it's 50% off",
"javascript: the good parts". Decisions worth knowing:

* ``{{name}}`` (a bare template placeholder) is *not* a template-injection
  match: people paste placeholders when talking about templates, and a bare
  name is harmless. Expressions are: arithmetic (``{{7*7}}``, ``${7*7}``,
  ``#{7*7}``), object access (``{{config}}``, ``{{self}}``, ``{{request}}``,
  dunder chains such as ``__class__.__mro__``), ``<%=`` and Spring's ``T(``.
* Keys are scanned too: a key that is exactly a NoSQL operator (``"$ne"``)
  matches; ``password[$ne]=`` (a query-string form) does not, to keep "$"
  cheap.
* ``sleep(5)`` and ``benchmark(`` need the digit right after the parenthesis,
  so that "I need sleep (lots)" does not match.
* Shell commands in backticks (`` `cat /etc/passwd` ``) match even in
  Markdown code spans: a chat about shell commands scores a little, which is
  why the default action is ``"score"``.

Errors never include the matched text: it is the attacker's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import msgspec

from wsguard.core.sanitize import join_path
from wsguard.exceptions import ConfigurationError

__all__ = [
    "CATEGORIES",
    "SignatureConfig",
    "SignatureMatch",
    "SignatureScanner",
]

_ACTIONS: Final = ("score", "refuse")


@dataclass(frozen=True, kw_only=True)
class SignatureConfig:
    """Settings of the ``[signatures]`` section.

    Args:
        enabled: scan the string values of every message after sanitization.
        action: ``"score"`` adds the attack-signature weight to the anomaly
            score; ``"refuse"`` refuses the message as well.

    Raises:
        ConfigurationError: for an unknown ``action``.
    """

    enabled: bool = True
    action: Literal["score", "refuse"] = "score"

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigurationError("signatures.enabled", "must be true or false")
        if self.action not in _ACTIONS:
            raise ConfigurationError("signatures.action", "must be 'score' or 'refuse'")


class SignatureMatch(NamedTuple):
    """Where a signature matched.

    Attributes:
        category: one of :data:`CATEGORIES`.
        path: the JSON path of the string, such as ``"$.payload.items[1].name"``;
            a matching key is reported at the path of its object.
    """

    category: str
    path: str


# How the pattern is built, and why. The text is lowercased, then searched
# with one pattern of this shape (no re.IGNORECASE: every rule is written in
# lowercase):
#
#     <(?:script\b(?P<r0>)|iframe\b(?P<r1>)|...)|;\s{0,10}+(?:drop...(?P<r7>)|...)|...
#
# * Each top-level alternative starts with one *anchor*, a symbol, or the
#   letter "u" of "union" (followed by a literal "nion "). Blanks are not
#   anchors: the rules that start with one are searched on their own
#   (``_BLANK_RULES``). A pattern whose alternatives all start with a literal
#   gets a "charset prefix" in re: search() skips every other character in a
#   tight C loop and enters the pattern only at an anchor.
# * Under an anchor, every rule starts with a literal or a character class,
#   and ends with an empty named group. re skips a branch whose first literal
#   or class does not match the next character without entering it, which a
#   leading group, a case-insensitive literal or a leading repetition would
#   prevent. The empty group closes last, so ``lastgroup`` names the rule.
# * Blanks shared by the rules of an anchor are matched once, possessively
#   (``\s{0,10}+``): a failing rule never backtracks into them.
# * Words ("javascript", "sleep") are not anchors, letters being too common:
#   they are checked with a fixed-width look-behind from the symbol that
#   follows them. "union" is the exception: it was checked from the blank
#   after it, which made every blank of every message enter the pattern.
#
# One named group per category at the top level costs ~1 us per character
# (every position enters every group): 40-100 ms for 64 KiB. This shape keeps
# the worst case at 5-9 ms (benchmarks/redos.py).

_SHELL = (
    r"(?:cat|ls|id|whoami|uname|curl|wget|nc|ncat|netcat|bash|sh|zsh|rm|ping"
    r"|sleep|echo|printf|python[23]?|perl|php|ruby|base64|chmod|powershell)\b"
)
_URL_ARGUMENT = r"(?:-{1,2}\w|[a-z]{2,10}://|[\w.-]{1,60}[/:])"  # -o, http://, host/
# Commands after a shell separator, each with the argument shape that makes it
# look like a command rather than a word ("; cat food" is not flagged).
_AFTER_SEPARATOR: Final[tuple[tuple[str, str], ...]] = (
    ("command_injection", r"rm\s{1,5}-[a-z]{0,5}[rf]"),
    ("command_injection", r"n(?:c|cat|etcat)\s{1,5}[-\w]"),
    (
        "command_injection",
        r"c(?:url\s{1,5}" + _URL_ARGUMENT + r"|at\s{1,5}/|h(?:mod|own)\s{1,5}\+?\w)",
    ),
    ("command_injection", r"wget\s{1,5}" + _URL_ARGUMENT),
    ("command_injection", r"bash\s{1,5}-[ci]\b"),
    ("command_injection", r"zsh\s{1,5}-[ci]\b"),
    ("command_injection", r"sh\s{1,5}-[ci]\b"),
    ("command_injection", r"ls\s{1,5}/"),
    ("command_injection", r"id\s{0,5}(?:[;|&#`]|\Z)"),
    ("command_injection", r"whoami\s{0,5}(?:[;|&#`]|\Z)"),
    ("command_injection", r"uname(?:\s{1,5}-a)?\s{0,5}(?:[;|&#`]|\Z)"),
    ("command_injection", r"p(?:ython[23]?|erl|hp)\s{1,5}-[ecr]\b|powershell\b"),
    ("command_injection", r"ruby\s{1,5}-e\b"),
)
_NOSQL_OPERATORS: Final = frozenset(
    "where ne eq gt gte lt lte in nin regex exists expr or and nor not elemmatch"
    " function accumulator lookup jsonschema type size all mod".split()
)
_NOSQL_OPS = "(?:" + "|".join(sorted(_NOSQL_OPERATORS, key=len, reverse=True)) + ")"
# A whole string that is an operator: a key such as "$ne". Checked outside the
# pattern: an anchored rule would cost a look-behind at every "$".
_NOSQL_KEY_LENGTH: Final = 1 + max(map(len, _NOSQL_OPERATORS))
_SQL_GAP = r"(?:\s|/\*[^*]{0,20}\*/)"  # a blank or an inline comment
_SQL_COMPARISON = r"\(?(?:['\"]\w{0,20}['\"]|\w{1,20})\s{0,5}(?:=|<|>|like\b)"
_SLASH = r"(?:[/\\]|%(?:25)?(?:2f|5c))"  # "/", "\", and percent-encoded forms

# (anchors, shared prefix, rules); each rule is (category, pattern). Within an
# anchor, rules are tried in order, so the order between categories decides
# which one is reported when two match at the same position.
# A rule is (category, pattern), or (literal, rules) for rules that share a
# first literal.
_Rules = tuple[tuple[str, "str | _Rules"], ...]
_ANCHORS: Final[tuple[tuple[str, str, _Rules], ...]] = (
    (
        "<",
        "",
        (
            ("xss", r"script\b"),
            ("xss", r"iframe\b"),
            # An event handler inside a tag: <svg onload=, <img src=x onerror=.
            # The window stops at "<": windows of two tags never overlap.
            ("xss", r"[a-z][^<>]{0,200}[\s/\"'`]on[a-z]{3,30}\s{0,5}="),
            ("template_injection", r"%="),
        ),
    ),
    (
        ":",
        "",
        (
            # "javascript:alert(1)", not "javascript: the good parts".
            # One look-behind at each ":" (a guard), the others only after "t:"/"a:".
            (
                "xss",
                r"(?<=[ta]:)(?:(?<=javascript:)(?:\S|\s{1,5}[\w$.]{1,40}\()"
                r"|(?<=vbscript:)|(?<=\bdata:)\s{0,5}text/html)",
            ),
            ("path_traversal", r"[\\/](?<=\bc:[\\/])[\\/]{0,2}windows\b"),
        ),
    ),
    (
        "'\"",
        r"[\s);]{0,13}+",
        (
            # A quote closing a string, then a tautology or a comparison.
            ("sqli", r"or(?:\s{1,10}|(?=['\"(]))" + _SQL_COMPARISON),
            ("sqli", r"and(?:\s{1,10}|(?=['\"(]))" + _SQL_COMPARISON),
            ("sqli", r"\|\|\s{0,10}" + _SQL_COMPARISON),
            ("sqli", r"&&\s{0,10}" + _SQL_COMPARISON),
            # A comment right after the quote (admin'--, admin'#, 1')/*), or
            # "--" ending the text; not "'quoted' -- said someone".
            ("sqli", r"--(?:(?<=['\");]--)|[\s-]{0,5}+\Z)"),
            ("sqli", r"/\*(?<=['\");]/\*)"),
            ("sqli", r"#(?<=['\");]#)(?:\s|\Z)"),
            ("sqli", r"\d(?<=waitfor delay '\d)"),
            ("template_injection", r"__(?:class|globals|builtins|subclasses)__['\"]"),
            ("nosql", r"\$" + _NOSQL_OPS + r"['\"]\s{0,5}:"),  # {"$ne": 1}
        ),
    ),
    (
        # "union select": anchored on the word, not on the blank after it.
        "u",
        "",
        (
            (
                "sqli",
                rf"nion (?<!\wunion ){_SQL_GAP}{{0,9}}+(?:all{_SQL_GAP}{{1,10}})?select\b",
            ),
        ),
    ),
    (
        ";",
        r"\s{0,10}+",
        (
            ("sqli", r"drop\s{1,10}(?:table|database|schema|user|view)\b"),
            ("sqli", r"truncate\s{1,10}table\b"),
            ("sqli", r"alter\s{1,10}(?:table|database|user)\b"),
            ("sqli", r"delete\s{1,10}from\b"),
            ("sqli", r"insert\s{1,10}into\b"),
            ("sqli", r"shutdown\b"),
            ("sqli", r"exec(?:ute)?\s{1,10}xp_"),
            *_AFTER_SEPARATOR,
        ),
    ),
    (
        "|",
        r"\s{0,5}+",
        (
            *_AFTER_SEPARATOR,
            # curl ... | sh
            ("command_injection", r"sh\s{0,5}(?:[;&|]|\Z)|bash\s{0,5}(?:[;&|]|\Z)"),
            ("template_injection", r"attr\s{0,5}\("),  # x|attr("__class__")
        ),
    ),
    ("&", r"&\s{0,5}+", _AFTER_SEPARATOR),
    ("`", r"\s{0,5}+", (("command_injection", _SHELL + r"[^`\n]{0,100}`"),)),
    (
        "(",
        "",
        (
            ("sqli", r"\d(?:(?<=sleep\(\d)|(?<=benchmark\(\d))"),  # and pg_sleep(
            ("template_injection", r"java\.(?<=\bt\(java\.)"),  # Spring EL T(java.
        ),
    ),
    (
        ".",
        "",
        (
            ("path_traversal", r"\." + _SLASH),
            ("path_traversal", r"%2e" + _SLASH + "|%252e" + _SLASH),
            ("path_traversal", r"ini\b(?:(?<=\bboot\.ini)|(?<=\bwin\.ini))"),
            # A dunder chain (''.__class__.__mro__, x.__init__.__globals__), or
            # an attribute that only an exploit reaches for (x.__globals__).
            (
                "template_injection",
                r"_(?<=__\._)_(?:mro|subclasses|globals|builtins|bases?|class|init)__",
            ),
            ("template_injection", r"__(?:globals|builtins|subclasses)__"),
        ),
    ),
    (
        "%",
        "",
        (
            ("path_traversal", r"2e(?:\.|%(?:25)?2e)" + _SLASH),
            ("path_traversal", r"252e(?:\.|%(?:25)?2e)" + _SLASH),
            ("path_traversal", r"c0%a[ef]|c1%9c"),  # overlong UTF-8 "." and "/"
            ("jndi", r"24%7b\s{0,5}(?:jndi|%24%7b|\$\{)"),  # %24%7bjndi
        ),
    ),
    (
        "/",
        "",
        (
            ("sqli", r"\*(?:\*/|!)"),  # /**/ between keywords, MySQL's /*!50000
            (
                "sqli",
                rf"\*(?<=union/\*)[^*]{{0,20}}\*/{_SQL_GAP}{{0,10}}+"
                rf"(?:all{_SQL_GAP}{{1,10}})?select\b",
            ),
            ("path_traversal", r"etc/(?:passwd|shadow|hosts|group)\b|proc/self/"),
            ("command_injection", r"bin/(?:ba|z)?sh\b"),
        ),
    ),
    (
        "$",
        "",
        (
            ("command_injection", r"\(\s{0,5}" + _SHELL),  # $(id), not $(document)
            (
                r"\{",
                (
                    ("command_injection", r"ifs\}"),
                    # JNDI-style lookups (Log4Shell).
                    (
                        "jndi",
                        r"\s{0,5}+(?:jndi|env|sys|lower|upper|date|java|main|ctx|base64|k8s"
                        r"|docker|spring|bundle|web|log4j|marker|sd|map|event)\s{0,5}:",
                    ),
                    ("jndi", r"\s{0,5}+::-"),  # ${::-j}
                    ("jndi", r"[^{}]{0,20}\$\{"),  # nested: ${${lower:j}ndi:
                ),
            ),
            ("nosql", r"where\b"),
        ),
    ),
    (
        "{",
        "",
        (
            # Expressions, not bare placeholders such as {{name}}.
            # {{7*7}} ${7*7} #{7*7} *{7*7} @{7*7}, from the second character.
            (
                "template_injection",
                r"[\s\d](?<=[{$#*@]\{[\s\d])\s{0,4}+\d{0,10}+\s{0,5}+[*+\-/%]\s{0,5}+\d{1,10}\s{0,5}\}",
            ),
            # Template globals that lead to the interpreter: {{config}}, {{ self }}.
            (
                "template_injection",
                r"\{\s{0,5}+(?:config|self|request|lipsum|cycler|joiner|namespace"
                r"|url_for|get_flashed_messages)\b",
            ),
        ),
    ),
)

CATEGORIES: Final[tuple[str, ...]] = (
    "xss",
    "sqli",
    "path_traversal",
    "command_injection",
    "jndi",
    "template_injection",
    "nosql",
)
"""The category names."""

_SHORTEST = 3  # "../", "$ne": no rule matches fewer characters.

# Rules that start with a blank, searched on their own: a blank is the most
# common character of ordinary text, and as an anchor of the combined pattern
# each one costs an entry into it. Alone, each rule starts with a literal of
# three or four characters (" or", " and"): a substring test finds whether
# the rule can match at all.
_BLANK_RULES: Final[tuple[tuple[str, str, str], ...]] = (
    # "or 1=1" without a quote: the same number on both sides.
    ("sqli", " or", r"\s{1,10}(?P<n>\d{1,10})\s{0,5}=\s{0,5}(?P=n)\b"),
    ("sqli", " and", r"\s{1,10}(?P<n>\d{1,10})\s{0,5}=\s{0,5}(?P=n)\b"),
)


def _from_the_start(text: str) -> int:
    """Without the C prefilter, every text is searched from its start."""
    return 0


try:
    # Where a rule could first match, in one C pass (_signature_scan.c).
    from wsguard.core._signature_scan import first_candidate
except ImportError:  # pragma: no cover - a build without the extension
    first_candidate = _from_the_start


def _alternation(rules: _Rules, groups: dict[str, str]) -> str:
    """The source of one alternation, each rule ended by its named group."""
    inner = []
    for head, body in rules:
        if isinstance(body, tuple):
            # A shared literal, then its own rules: re checks the literal once.
            inner.append(head + _alternation(body, groups))
            continue
        name = f"r{len(groups)}"
        groups[name] = head
        own = body.replace("(?P<_n>", f"(?P<{name}_n>").replace("(?P=_n)", f"(?P={name}_n)")
        inner.append(f"(?:{own})(?P<{name}>)")
    return f"(?:{'|'.join(inner)})"


def _compile() -> tuple[re.Pattern[str], dict[str, str]]:
    """Build the combined pattern and the map from group name to category.

    Group names are ``r0``, ``r1``...; a rule's own group (``_n``) is renamed
    so that its copies under several anchors do not clash.
    """
    groups: dict[str, str] = {}
    alternatives = [
        re.escape(anchor) + prefix + _alternation(rules, groups)
        for anchors, prefix, rules in _ANCHORS
        for anchor in anchors
    ]
    return re.compile("|".join(alternatives)), groups


class _Found(Exception):
    """Internal: a match unwinding through the tree, collecting its path."""

    def __init__(self, category: str) -> None:
        super().__init__(category)
        self.category = category
        self.pieces: list[str | int] = []  # innermost first


class SignatureScanner:
    """Scans strings and decoded messages for attack signatures.

    Build one at startup and share it: it holds only the compiled pattern,
    so it is safe to use from any connection.
    """

    __slots__ = ("_blank", "_groups", "_search")

    def __init__(self) -> None:
        pattern, self._groups = _compile()
        self._search = pattern.search
        self._blank = tuple(
            (literal, re.compile(literal + rule).search, category)
            for category, literal, rule in _BLANK_RULES
        )

    def scan_text(self, text: str) -> str | None:
        """Scan one string.

        Args:
            text: any string; its length bounds the time taken (linearly).

        Returns:
            The category of the first match, or None.
        """
        lowered = text.lower()
        if (
            lowered[:1] == "$"
            and len(lowered) <= _NOSQL_KEY_LENGTH
            and lowered[1:] in _NOSQL_OPERATORS
        ):
            return "nosql"
        category: str | None = None
        start = len(lowered)
        first = first_candidate(lowered)
        # No rule can match before ``first``: the search starts there, or not
        # at all. Look-behinds still see the text before it.
        found = self._search(lowered, first) if first >= 0 else None
        if found is not None:
            # lastgroup is the last group to close: the rule's own group, which
            # encloses any group of its pattern.
            assert found.lastgroup is not None  # every alternative is a group
            category, start = self._groups[found.lastgroup], found.start()
        # The first match in the text wins, as in one pattern: no two rules
        # can start at the same place (each starts with its own character).
        for literal, search, rule_category in self._blank:
            if literal not in lowered:  # a substring test is cheaper than a search
                continue
            blank = search(lowered)
            if blank is not None and blank.start() < start:
                category, start = rule_category, blank.start()
        return category

    def scan(self, value: Any, path: str = "$") -> SignatureMatch | None:
        """Scan every string in a decoded message, keys included.

        Call it after sanitization, which bounds the nesting depth; the walk
        recurses into dicts, lists, tuples and :class:`msgspec.Struct` values.
        Other values (numbers, bytes, None) are not scanned.

        Args:
            value: the decoded message or any part of it.
            path: the JSON path of ``value``, used as the prefix of the result.

        Returns:
            The first match in document order, or None.
        """
        if isinstance(value, msgspec.Struct):
            # The usual payload: a struct of strings. Scan them in place rather
            # than through the generic walk; containers still take the walk.
            names = value.__struct_encode_fields__
            for index, field in enumerate(value.__struct_fields__):
                item = getattr(value, field)
                if isinstance(item, str):
                    if len(item) >= _SHORTEST:
                        category = self.scan_text(item)
                        if category is not None:
                            return SignatureMatch(category, join_path(path, [names[index]]))
                elif item is not None and not isinstance(item, int | float):
                    found = self.scan(item, join_path(path, [names[index]]))
                    if found is not None:
                        return found
            return None
        try:
            self._walk(value)
        except _Found as exc:
            return SignatureMatch(exc.category, join_path(path, exc.pieces))
        return None

    def _walk(self, value: Any) -> None:
        kind = type(value)
        if kind is str:
            if len(value) >= _SHORTEST and (category := self.scan_text(value)) is not None:
                raise _Found(category)
        elif kind is dict:
            self._walk_dict(value)
        elif kind is list or kind is tuple:
            self._walk_items(value)
        elif isinstance(value, msgspec.Struct):
            self._walk_struct(value)
        elif isinstance(value, str):
            # Subclasses such as sanitize.Html and SafePath.
            if len(value) >= _SHORTEST and (category := self.scan_text(value)) is not None:
                raise _Found(category)
        elif isinstance(value, dict):
            self._walk_dict(value)
        elif isinstance(value, list | tuple):
            self._walk_items(value)

    def _walk_dict(self, obj: dict[Any, Any]) -> None:
        for key, item in obj.items():
            if isinstance(key, str) and len(key) >= _SHORTEST:
                category = self.scan_text(key)
                if category is not None:
                    # Reported at the object's path: the key is the value.
                    raise _Found(category)
            try:
                self._walk(item)
            except _Found as exc:
                exc.pieces.append(key if isinstance(key, str) else str(key))
                raise

    def _walk_items(self, obj: list[Any] | tuple[Any, ...]) -> None:
        for index, item in enumerate(obj):
            try:
                self._walk(item)
            except _Found as exc:
                exc.pieces.append(index)
                raise

    def _walk_struct(self, obj: msgspec.Struct) -> None:
        # Field names are the schema's, not the peer's: only values are scanned.
        # The path uses the encoded names, as they appear on the wire.
        names = obj.__struct_encode_fields__
        for index, field in enumerate(obj.__struct_fields__):
            try:
                self._walk(getattr(obj, field))
            except _Found as exc:
                exc.pieces.append(names[index])
                raise
