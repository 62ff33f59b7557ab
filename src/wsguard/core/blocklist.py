"""An IP block list: FireHOL netset parsing and O(log n) lookups.

Theory of operation:

* :meth:`BlockList.parse` reads the netset format used by FireHOL and most
  public lists: one IPv4 or IPv6 address or CIDR network a line, ``#``
  comments, blank lines. A bad line is reported with its line number and
  skipped; parsing never raises.
* Each entry is turned into an integer range ``[first, last]``, one sorted
  list per address family, merged so that they neither overlap nor touch
  (the result :func:`ipaddress.collapse_addresses` would give, computed on
  integers, which is several times faster for 100,000 entries).
* A lookup converts the address to an integer and bisects the range starts:
  O(log n), no allocation beyond the parsed address.

No I/O here: :mod:`wsguard.reputation` reads the file and reloads it.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Iterable

__all__ = ["BlockList"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Text allowed after an entry on the same line: a comment. "1.2.3.4 junk" is a
# bad line, so that a corrupted file is noticed rather than half-read.
_COMMENT_MARKERS = ("#", ";")


def _parse_entry(entry: str) -> tuple[int, int, int] | None:
    """``(version, first, last)`` for an address or a CIDR network, or None.

    :func:`socket.inet_pton` does the address (in C: ipaddress is ~10x slower
    and 100,000 entries must load in well under a second).
    """
    address, slash, length = entry.partition("/")
    family, bits = (socket.AF_INET6, 128) if ":" in address else (socket.AF_INET, 32)
    try:
        value = int.from_bytes(socket.inet_pton(family, address), "big")
    except OSError:  # also raised for an invalid address
        return None
    prefix = bits
    if slash:
        # Digits only: int() would also accept " 24", "+24" and "2_4".
        if not (length.isdigit() and length.isascii() and len(length) <= 3):
            return None
        prefix = int(length)
        if prefix > bits:
            return None
    if bits == 128 and prefix >= 96 and value >> 32 == 0xFFFF:
        # ::ffff:192.0.2.1 is an IPv4 address; lookups map it the same way.
        value, bits, prefix = value & 0xFFFFFFFF, 32, prefix - 96
    host_mask = (1 << (bits - prefix)) - 1
    first = value & ~host_mask  # host bits are ignored, as with strict=False
    return (4 if bits == 32 else 6), first, first | host_mask


def _merge(ranges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Sort and merge overlapping or adjacent ranges; return starts and ends."""
    ranges.sort()
    starts: list[int] = []
    ends: list[int] = []
    for first, last in ranges:
        if ends and first <= ends[-1] + 1:
            if last > ends[-1]:
                ends[-1] = last
        else:
            starts.append(first)
            ends.append(last)
    return starts, ends


class BlockList:
    """A set of IPv4 and IPv6 networks with fast membership tests.

    Immutable once built: to change it, build a new one and swap the
    reference (a single assignment, safe to do from a reload thread).

    Args:
        networks: the networks to block; may overlap, in any order.
    """

    __slots__ = ("_v4_ends", "_v4_starts", "_v6_ends", "_v6_starts")

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for network in networks:
            bucket = v4 if network.version == 4 else v6
            bucket.append((int(network.network_address), int(network.broadcast_address)))
        self._v4_starts, self._v4_ends = _merge(v4)
        self._v6_starts, self._v6_ends = _merge(v6)

    @classmethod
    def parse(cls, text: str, source: str = "<text>") -> tuple[BlockList, list[str]]:
        """Parse a netset file.

        Accepted lines: an address (``192.0.2.1``, ``2001:db8::1``) or a
        network (``192.0.2.0/24``, ``2001:db8::/48``; host bits are ignored),
        optionally followed by whitespace and a ``#`` or ``;`` comment. Lines
        that are blank or start with ``#`` are skipped.

        Args:
            text: the file's content.
            source: the name used in problems, usually the file's path.

        Returns:
            The block list and the problems, one ``"source:LINE: bad entry"``
            for each line that was skipped because it is not an address or a
            network. The problems never contain the line's text.
        """
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        problems: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            parts = line.split(None, 1)
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) > 1 and not parts[1].startswith(_COMMENT_MARKERS):
                problems.append(f"{source}:{number}: bad entry")
                continue
            parsed = _parse_entry(parts[0])
            if parsed is None:
                problems.append(f"{source}:{number}: bad entry")
            elif parsed[0] == 4:
                v4.append(parsed[1:])
            else:
                v6.append(parsed[1:])
        blocklist = cls()
        blocklist._v4_starts, blocklist._v4_ends = _merge(v4)
        blocklist._v6_starts, blocklist._v6_ends = _merge(v6)
        return blocklist, problems

    def __contains__(self, ip: object) -> bool:
        """Whether ``ip`` (a string) is in a blocked network; False if it is not an address.

        An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is looked up as IPv4.
        """
        if not isinstance(ip, str):
            return False
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if address.version == 6:
            assert isinstance(address, ipaddress.IPv6Address)  # help mypy
            mapped = address.ipv4_mapped
            if mapped is None:
                return self._find(self._v6_starts, self._v6_ends, int(address))
            address = mapped
        return self._find(self._v4_starts, self._v4_ends, int(address))

    @staticmethod
    def _find(starts: list[int], ends: list[int], value: int) -> bool:
        index = bisect_right(starts, value) - 1
        return index >= 0 and value <= ends[index]

    def __len__(self) -> int:
        """The number of ranges after merging, both families together."""
        return len(self._v4_starts) + len(self._v6_starts)

    def __repr__(self) -> str:
        return f"<BlockList {len(self._v4_starts)} IPv4 and {len(self._v6_starts)} IPv6 ranges>"
