"""The client's address, and the key its per-IP limits are counted under.

Theory of operation:

* The client is the socket peer unless the peer is one of our own reverse
  proxies (``trusted_proxies``). Only then are ``X-Forwarded-For`` (every
  occurrence, joined in order) or, when it is absent, RFC 7239 ``Forwarded``
  ``for=`` values read. Anyone can write those headers, so from any other peer
  they are ignored: a forged header must not move a client to another budget.
* The hop list is walked from the right, the hop nearest to us, skipping our
  own proxies; the first address that is not a trusted proxy is the client.
  Entries to the left of it were written by the client itself and mean nothing.
  A malformed, ``unknown`` or obfuscated entry stops the walk and the last
  address known good (a trusted proxy, or the peer) is used, so garbage can
  only ever make a client look like one of our proxies, never like someone else.
* :meth:`ClientIdentity.rate_key` counts IPv4 clients per address and IPv6
  clients per ``ipv6_prefix`` network (a /64 by default: one subscriber usually
  holds a whole /64 and could rotate addresses inside it at will). IPv4-mapped
  IPv6 addresses (``::ffff:192.0.2.1``, from dual-stack sockets) are IPv4.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from wsguard.exceptions import ConfigurationError

__all__ = ["ClientIdentity", "NetworkConfig"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Hops examined at most. Real chains are a handful of proxies long; the cap only
# bounds the work a trusted proxy could be made to forward.
_MAX_HOPS = 64


def _parse_networks(setting: str, cidrs: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    if isinstance(cidrs, str):
        raise ConfigurationError(setting, "must be a list of CIDRs, not a string")
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            # strict=False: "10.0.0.1/8" means 10.0.0.0/8; a bare address is a /32 or /128.
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except (ValueError, TypeError, AttributeError):
            raise ConfigurationError(setting, f"{cidr!r} is not a CIDR") from None
    return tuple(networks)


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """Where clients come from. These are top-level settings, not a section.

    Attributes:
        trusted_proxies: CIDRs of our reverse proxies, whose forwarding headers
            are believed.
        exempt_ips: CIDRs exempt from the per-IP budgets, caps and bans
            (monitoring, health checkers); user budgets and checks still apply.
        ipv6_prefix: IPv6 clients are limited per network of this prefix length.
    """

    trusted_proxies: tuple[str, ...] = ()
    exempt_ips: tuple[str, ...] = ()
    ipv6_prefix: int = 64

    def __post_init__(self) -> None:
        _parse_networks("trusted_proxies", self.trusted_proxies)
        _parse_networks("exempt_ips", self.exempt_ips)
        prefix = self.ipv6_prefix
        if isinstance(prefix, bool) or not isinstance(prefix, int) or not 1 <= prefix <= 128:
            raise ConfigurationError("ipv6_prefix", "must be an integer between 1 and 128")


@functools.lru_cache(maxsize=4096)  # a handshake parses its peer up to three times
def _address(text: str) -> IPAddress | None:
    """Parse an address, unwrapping IPv4-mapped IPv6; ``None`` if it is not one."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# Formatting an address costs more than a cache hit; bounded like _address.
@functools.lru_cache(maxsize=4096)
def _rate_key(ip: str, prefix: int) -> str:
    address = _address(ip.strip())
    if address is None:
        return ip
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    mask = ((1 << prefix) - 1) << (128 - prefix)
    # Built from the integer: this also drops any zone index ("%eth0").
    network = ipaddress.IPv6Network((int(address) & mask, prefix))
    return str(network)


def _is_port(text: str) -> bool:
    # RFC 7239 node-port: a number, or an obfuscated "_token".
    if text.isascii() and text.isdigit():
        return len(text) <= 5 and int(text) <= 65535
    return len(text) > 1 and text[0] == "_" and all(c.isalnum() or c in "._-" for c in text[1:])


def _node_address(node: str) -> IPAddress | None:
    """Parse one hop: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:80``.

    Returns ``None`` for anything else: ``unknown``, an obfuscated ``_name``, garbage.
    """
    node = node.strip(" \t")
    if node.startswith("["):
        end = node.find("]")
        if end < 0:
            return None
        rest = node[end + 1 :]
        if rest and not (rest[0] == ":" and _is_port(rest[1:])):
            return None
        inside = node[1:end]
        # Brackets are for IPv6 only (an IPv4-mapped one included).
        return _address(inside) if ":" in inside and "%" not in inside else None
    if node.count(":") == 1:  # IPv4 with a port (some proxies write it so)
        host, port = node.split(":")
        if not _is_port(port):
            return None
        address = _address(host)
        return address if isinstance(address, ipaddress.IPv4Address) else None
    if "%" in node:  # a zone index is meaningless from another host
        return None
    return _address(node)


def _split_quoted(text: str, separator: str) -> list[str]:
    """Split ``text`` on ``separator`` outside RFC 7230 quoted strings."""
    parts: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == separator:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str | None:
    """The content of a token or quoted string; ``None`` if badly quoted."""
    if not value.startswith('"'):
        return None if '"' in value else value
    if len(value) < 2 or not value.endswith('"'):
        return None
    out: list[str] = []
    escaped = False
    for char in value[1:-1]:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return None
        else:
            out.append(char)
    return None if escaped else "".join(out)


def _forwarded_nodes(values: list[str]) -> list[str | None]:
    """The ``for=`` value of each element of ``Forwarded`` headers, in order.

    An element without exactly one ``for=``, or a badly formed one, gives ``None``.
    """
    nodes: list[str | None] = []
    for value in values:
        for element in _split_quoted(value, ","):
            node: str | None = None
            seen = 0
            for pair in _split_quoted(element, ";"):
                name, equals, raw = pair.partition("=")
                if not equals:
                    if pair.strip(" \t"):
                        seen = 2  # a parameter with no value: the element is garbage
                    continue
                if name.strip(" \t").lower() == "for":
                    seen += 1
                    node = _unquote(raw.strip(" \t"))
            nodes.append(node if seen == 1 else None)
    return nodes


def _in_any(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    version = address.version
    return any(network.version == version and address in network for network in networks)


class ClientIdentity:
    """Finds the client's address and its rate key.

    Args:
        config: the network settings.
    """

    __slots__ = ("_exempt", "_prefix", "_trusted")

    def __init__(self, config: NetworkConfig) -> None:
        self._trusted = _parse_networks("trusted_proxies", config.trusted_proxies)
        self._exempt = _parse_networks("exempt_ips", config.exempt_ips)
        self._prefix = config.ipv6_prefix

    def client_ip(self, peer: str, headers: Iterable[tuple[str, str]]) -> str:
        """The client's address.

        Args:
            peer: the socket peer's address.
            headers: the request headers as ``(lower-case name, value)`` pairs.

        Returns:
            ``peer`` unchanged when it is not a trusted proxy (or not an
            address); otherwise the right-most forwarded address that is not a
            trusted proxy, in its normal text form.
        """
        address = _address(peer)
        if address is None or not self._trusted or not _in_any(address, self._trusted):
            return peer
        forwarded_for: list[str] = []
        forwarded: list[str] = []
        for name, value in headers:
            if name == "x-forwarded-for":
                forwarded_for.append(value)
            elif name == "forwarded":
                forwarded.append(value)
        nodes: list[str | None]
        if forwarded_for:
            nodes = [node for value in forwarded_for for node in value.split(",")]
        elif forwarded:
            nodes = _forwarded_nodes(forwarded)
        else:
            return peer
        found: IPAddress | None = None
        for node in reversed(nodes[-_MAX_HOPS:]):
            hop = None if node is None else _node_address(node)
            if hop is None:
                break  # garbage stops the walk: keep the last hop known good
            found = hop
            if not _in_any(hop, self._trusted):
                break
        return peer if found is None else str(found)

    def rate_key(self, ip: str) -> str:
        """The key per-IP limits count ``ip`` under.

        An IPv4 address as is; an IPv6 address as its ``ipv6_prefix`` network
        (``"2001:db8:1:2::/64"``); an IPv4-mapped IPv6 address as the IPv4
        address. Anything that is not an address is returned unchanged.
        """
        return _rate_key(ip, self._prefix)

    def is_exempt(self, ip: str) -> bool:
        """True when ``ip`` is inside ``exempt_ips``."""
        if not self._exempt:  # the default: nothing to parse or search
            return False
        address = _address(ip)
        return address is not None and _in_any(address, self._exempt)

    def is_trusted_proxy(self, ip: str) -> bool:
        """True when ``ip`` is inside ``trusted_proxies``."""
        address = _address(ip)
        return address is not None and _in_any(address, self._trusted)
