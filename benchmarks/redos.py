"""Worst-case time of the attack-signature scanner on 64 KiB adversarial strings.

Python's :mod:`re` backtracks, so a careless pattern can take time quadratic
(or worse) in the length of the text. Each string below is 64 KiB of the
characters that start or repeat inside the patterns of one category, without
the token that would complete a match, so that the scanner does the most work
and finds nothing. Some units are dense in what the C prefilter
(``core/_signature_scan.c``) lets through ("{{7*", "&& rm ", "..%"), so that re
runs over the whole string. The script prints the worst time per category, best of 3
runs, and PASS when it is under the budget::

    python benchmarks/redos.py

``adversarial_strings()`` is shared with ``tests/core/test_signatures.py``,
which checks that the time grows linearly with the length.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from wsguard.core.signatures import CATEGORIES, SignatureScanner

SIZE = 64 * 1024
BUDGET_MS = 5.0

# Repeated units per category; each is repeated up to SIZE characters.
_UNITS: dict[str, tuple[str, ...]] = {
    "xss": (
        "<",
        "<a",
        "<a ",
        "<a on",
        "<a onxxx ",
        " onload",
        "<scrip",
        "<ifram",
        "javascript",
        "javascript: ",
        "script:",
        "data:",
        "data:text/",
        "on",
    ),
    "sqli": (
        "'",
        "' ",
        "' or ",
        "' or 1",
        "'or'",
        "') ",
        '"',
        "' -",
        ";",
        "; ",
        "; drop ",
        "union ",
        "union/*",
        "union all ",
        " or 1 = ",
        "sleep(",
        "(",
        "/*",
        "/",
    ),
    "path_traversal": (
        ".",
        "..",
        "..%",
        ". /",
        "%2e",
        "%2e%2e",
        "%25",
        "%",
        "/etc/",
        "/proc/",
        "c:",
        ":",
        "c:\\",
        "boot.",
    ),
    "command_injection": (
        "|",
        "| ",
        "| curl ",
        "&",
        "&&",
        "& ",
        ";",
        "; rm ",
        "; nc ",
        "&& rm ",
        "`",
        "`cat " + "x" * 101,  # the closing backtick is looked for 100 characters on
        "$(",
        "$( ",
        "/bin/",
    ),
    # "${" twice within 20 characters is a nested lookup (a match), hence the
    # 21 characters of padding.
    "jndi": (
        "$",
        "${}",
        "${ }",
        "${jndi}",
        "${::}",
        "${" + "a" * 21,
        "${jndi" + " " * 21,
        "%24%7bx",
        "%24",
        "$ {",
    ),
    "template_injection": (
        "{",
        "{{",
        "{{ ",
        "{{ 7",
        "{{7*",
        "{{7",
        "${7*}",
        "${7*" + "7" * 21,
        "#{",
        "<%",
        "__class__",
        "__class__ .",
        "._",
        "[",
        "[ '",
        "(",
        "t(",
    ),
    "nosql": ("$", "$n", "[$", "[ $", "'$", "'$ne'", '"$ne" ', "[$ne "),
}

_GENERIC = ("a", " ", "Hello there, how are you doing today? ")


def adversarial_strings(size: int = SIZE) -> dict[str, list[str]]:
    """The adversarial strings of each category, ``size`` characters each."""
    strings: dict[str, list[str]] = {}
    for category in CATEGORIES:
        units = _UNITS[category] + _GENERIC
        strings[category] = [(unit * (size // len(unit) + 1))[:size] for unit in units]
    return strings


def best_of(function: Callable[[str], object], text: str, runs: int = 3) -> float:
    """The best of ``runs`` timings of ``function(text)``, in milliseconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        function(text)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def worst_case_ms() -> dict[str, float]:
    """The worst time per category, in milliseconds, to scan 64 KiB."""
    scanner = SignatureScanner()
    return {
        category: max(best_of(scanner.scan_text, text) for text in texts)
        for category, texts in adversarial_strings().items()
    }


def main() -> int:
    """Print the table; exit with 1 when a category is over the budget."""
    results = worst_case_ms()
    print(f"{'category':<20} {'worst ms (64 KiB)':>18}  budget {BUDGET_MS} ms")
    failed = False
    for category, ms in results.items():
        verdict = "PASS" if ms < BUDGET_MS else "FAIL"
        failed = failed or ms >= BUDGET_MS
        print(f"{category:<20} {ms:>18.3f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
