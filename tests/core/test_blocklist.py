"""Tests for the block list: netset parsing, problems, lookups, scale."""

from __future__ import annotations

import ipaddress
import random
import time

from wsguard.core.blocklist import BlockList


def test_addresses_and_networks_are_blocked() -> None:
    """Single addresses and CIDR networks of both families are found."""
    blocklist, problems = BlockList.parse(
        "192.0.2.1\n198.51.100.0/24\n2001:db8::/48\n2001:db8:ffff::1\n"
    )
    assert problems == []
    assert "192.0.2.1" in blocklist
    assert "192.0.2.2" not in blocklist
    assert "198.51.100.0" in blocklist
    assert "198.51.100.255" in blocklist
    assert "198.51.101.0" not in blocklist
    assert "2001:db8::1" in blocklist
    assert "2001:db8:0:ffff:ffff:ffff:ffff:ffff" in blocklist
    assert "2001:db8:1::" not in blocklist
    assert "2001:db8:ffff::1" in blocklist
    assert "2001:db8:ffff::2" not in blocklist


def test_comments_blank_lines_and_inline_comments() -> None:
    """Comment lines, blank lines and comments after an entry are accepted."""
    text = (
        "#\n"
        "# FireHOL netset\n"
        "   # indented comment\n"
        "\n"
        "   \n"
        "192.0.2.0/28    # inline comment\n"
        "198.51.100.7\t; another style\n"
        "  203.0.113.9  \n"
    )
    blocklist, problems = BlockList.parse(text, source="list.netset")
    assert problems == []
    assert "192.0.2.15" in blocklist
    assert "192.0.2.16" not in blocklist
    assert "198.51.100.7" in blocklist
    assert "203.0.113.9" in blocklist
    assert len(blocklist) == 3


def test_bad_lines_are_reported_with_their_number_and_skipped() -> None:
    """A bad line is reported as "source:LINE: bad entry" and the rest still loads."""
    text = (
        "# header\n"
        "192.0.2.1\n"
        "not-an-ip\n"
        "300.1.2.3\n"
        "192.0.2.0/33\n"
        "198.51.100.1 trailing junk\n"
        "2001:db8::/48\n"
        "192.0.2.9#nospace\n"
    )
    blocklist, problems = BlockList.parse(text, source="list.netset")
    assert problems == [
        "list.netset:3: bad entry",
        "list.netset:4: bad entry",
        "list.netset:5: bad entry",
        "list.netset:6: bad entry",
        "list.netset:8: bad entry",
    ]
    assert "192.0.2.1" in blocklist
    assert "2001:db8::5" in blocklist
    assert "198.51.100.1" not in blocklist


def test_problems_never_contain_the_line() -> None:
    """The line's text (possibly anything) is not echoed into the log."""
    _, problems = BlockList.parse("<script>alert(1)</script>\n")
    assert problems == ["<text>:1: bad entry"]


def test_overlapping_and_adjacent_ranges_are_merged() -> None:
    """Overlapping, nested and touching networks become one range."""
    text = "10.0.0.0/8\n10.1.0.0/16\n10.255.255.255\n11.0.0.0/8\n9.255.255.255\n"
    blocklist, _ = BlockList.parse(text)
    assert len(blocklist) == 1
    assert "9.255.255.255" in blocklist
    assert "10.128.0.1" in blocklist
    assert "11.255.255.255" in blocklist
    assert "12.0.0.0" not in blocklist
    assert "9.255.255.254" not in blocklist


def test_families_do_not_mix() -> None:
    """An IPv6 network does not block the IPv4 addresses with the same integer."""
    blocklist, _ = BlockList.parse("::/96\n")
    assert "::1" in blocklist
    assert "0.0.0.1" not in blocklist


def test_ipv4_mapped_addresses_are_looked_up_as_ipv4() -> None:
    """::ffff:192.0.2.1 is the IPv4 client 192.0.2.1 on a dual-stack socket."""
    blocklist, _ = BlockList.parse("192.0.2.0/24\n")
    assert "::ffff:192.0.2.1" in blocklist
    assert "::ffff:198.51.100.1" not in blocklist


def test_invalid_lookups_are_not_blocked() -> None:
    """A string that is not an address is simply not in the list."""
    blocklist, _ = BlockList.parse("0.0.0.0/0\n::/0\n")
    assert "192.0.2.1" in blocklist
    assert "2001:db8::1" in blocklist
    for value in ("", "localhost", "192.0.2.1/32", " 192.0.2.1", "1.2.3", "::g"):
        assert value not in blocklist
    assert 3232235521 not in blocklist


def test_host_bits_are_ignored() -> None:
    """192.0.2.77/24 means 192.0.2.0/24, as most list tools treat it."""
    blocklist, problems = BlockList.parse("192.0.2.77/24\n")
    assert problems == []
    assert "192.0.2.1" in blocklist


def test_empty_list() -> None:
    """An empty list blocks nothing and has no ranges."""
    blocklist = BlockList()
    assert len(blocklist) == 0
    assert "192.0.2.1" not in blocklist
    assert BlockList.parse("")[0].__len__() == 0


def test_crlf_line_endings() -> None:
    """Files written on Windows parse the same."""
    blocklist, problems = BlockList.parse("192.0.2.1\r\n# c\r\n198.51.100.0/24\r\n")
    assert problems == []
    assert "198.51.100.9" in blocklist


def test_ipv4_mapped_entries_are_stored_as_ipv4() -> None:
    """An entry written in the mapped form blocks the IPv4 client too."""
    blocklist, problems = BlockList.parse("::ffff:192.0.2.0/120\n")
    assert problems == []
    assert "192.0.2.200" in blocklist
    assert "::ffff:192.0.2.200" in blocklist


def test_100k_entries_build_fast_and_match_a_brute_force_check() -> None:
    """100,000 entries load in well under a second; lookups agree with a linear scan."""
    rng = random.Random(1234)
    entries: list[tuple[int, int, int]] = []  # (version, first, last)
    lines = ["# generated"]
    for index in range(100_000):
        if index % 10 == 0:
            first = rng.getrandbits(48) << 80
            entries.append((6, first, first | (1 << 80) - 1))
            lines.append(f"{ipaddress.IPv6Address(first)}/48")
        elif index % 3 == 0:
            first = rng.getrandbits(24) << 8
            entries.append((4, first, first | 0xFF))
            lines.append(f"{ipaddress.IPv4Address(first)}/24")
        else:
            first = rng.getrandbits(32)
            entries.append((4, first, first))
            lines.append(str(ipaddress.IPv4Address(first)))
    text = "\n".join(lines) + "\n"

    start = time.perf_counter()
    blocklist, problems = BlockList.parse(text, source="big.netset")
    elapsed = time.perf_counter() - start
    assert problems == []
    assert elapsed < 2.0  # about 0.4 s on a laptop
    assert 0 < len(blocklist) <= 100_000

    def as_text(version: int, value: int) -> str:
        return str(ipaddress.ip_address(value) if version == 6 else ipaddress.IPv4Address(value))

    # Addresses inside listed entries are found...
    for version, first, last in rng.sample(entries, 500):
        assert as_text(version, rng.randint(first, last)) in blocklist

    # ... and random addresses agree with a linear scan of every entry.
    def brute_force(version: int, value: int) -> bool:
        return any(v == version and lo <= value <= hi for v, lo, hi in entries)

    probes = [(4, rng.getrandbits(32)) for _ in range(30)]
    probes += [(6, rng.getrandbits(128)) for _ in range(10)]
    # Neighbours of listed entries: just outside or at the edge.
    for version, first, last in rng.sample(entries, 10):
        probes += [(version, first - 1), (version, last), (version, last + 1)]
    for version, value in probes:
        assert (as_text(version, value) in blocklist) is brute_force(version, value)

    # Lookups are O(log n): 10,000 of them are quick.
    samples = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(10_000)]
    start = time.perf_counter()
    for sample in samples:
        _ = sample in blocklist
    assert time.perf_counter() - start < 1.0
