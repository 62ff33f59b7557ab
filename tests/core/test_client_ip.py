"""Client identity: forwarding headers only from trusted proxies, rate keys, exemptions."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsguard.core.client_ip import ClientIdentity, NetworkConfig, _rate_key
from wsguard.exceptions import ConfigurationError

PROXIES = ("10.0.0.0/8", "2001:db8:ffff::/48")


def _identity(**settings: Any) -> ClientIdentity:
    settings.setdefault("trusted_proxies", PROXIES)
    return ClientIdentity(NetworkConfig(**settings))


def _xff(*values: str) -> list[tuple[str, str]]:
    return [("x-forwarded-for", value) for value in values]


def _fwd(*values: str) -> list[tuple[str, str]]:
    return [("forwarded", value) for value in values]


# Config.


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trusted_proxies", ("10.0.0.0/33",)),
        ("trusted_proxies", ("not-a-network",)),
        ("trusted_proxies", "10.0.0.0/8"),
        ("exempt_ips", ("192.0.2.0/24", "300.1.1.1")),
        ("ipv6_prefix", 0),
        ("ipv6_prefix", 129),
        ("ipv6_prefix", True),
    ],
)
def test_config_refuses_bad_values(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        NetworkConfig(**{field: value})
    assert info.value.setting == field


def test_config_accepts_addresses_and_loose_cidrs() -> None:
    identity = _identity(trusted_proxies=("10.1.2.3/8", "192.0.2.7", "2001:db8::1"))
    assert identity.is_trusted_proxy("10.200.0.1")
    assert identity.is_trusted_proxy("192.0.2.7")
    assert not identity.is_trusted_proxy("192.0.2.8")
    assert identity.is_trusted_proxy("2001:db8::1")


# X-Forwarded-For.


def test_untrusted_peer_with_forged_xff_is_the_peer() -> None:
    identity = _identity()
    peer = "203.0.113.9"
    assert identity.client_ip(peer, _xff("198.51.100.1")) == peer
    assert identity.client_ip(peer, _fwd("for=198.51.100.1")) == peer
    # The rate key is unchanged by whatever the client writes.
    assert identity.rate_key(identity.client_ip(peer, _xff("1.1.1.1"))) == peer


def test_no_trusted_proxies_configured_ignores_headers() -> None:
    identity = ClientIdentity(NetworkConfig())
    assert identity.client_ip("10.0.0.1", _xff("198.51.100.1")) == "10.0.0.1"


def test_trusted_peer_gives_the_right_most_untrusted() -> None:
    identity = _identity()
    # The client forged the left-most entry; our proxy appended the real one.
    headers = _xff("6.6.6.6, 198.51.100.1")
    assert identity.client_ip("10.0.0.1", headers) == "198.51.100.1"


def test_chain_of_trusted_proxies() -> None:
    identity = _identity()
    headers = _xff("6.6.6.6, 198.51.100.1, 10.0.0.3", "10.0.0.2")  # two occurrences, in order
    assert identity.client_ip("10.0.0.1", headers) == "198.51.100.1"


def test_all_hops_trusted_gives_the_left_most() -> None:
    identity = _identity()
    assert identity.client_ip("10.0.0.1", _xff("10.0.0.3, 10.0.0.2")) == "10.0.0.3"


def test_trusted_peer_without_headers_is_the_peer() -> None:
    identity = _identity()
    assert identity.client_ip("10.0.0.1", [("host", "example")]) == "10.0.0.1"


def test_xff_with_ports_and_ipv6() -> None:
    identity = _identity()
    assert identity.client_ip("10.0.0.1", _xff("198.51.100.1:5555")) == "198.51.100.1"
    assert identity.client_ip("10.0.0.1", _xff("2001:DB8:1::0001")) == "2001:db8:1::1"
    assert identity.client_ip("10.0.0.1", _xff("[2001:db8:1::1]:443")) == "2001:db8:1::1"
    assert identity.client_ip("10.0.0.1", _xff("::ffff:198.51.100.1")) == "198.51.100.1"
    assert identity.client_ip("2001:db8:ffff::5", _xff("198.51.100.1")) == "198.51.100.1"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "unknown",
        "_hidden",
        "not an ip",
        "198.51.100.1:99999",
        "1.2.3",
        "[1.2.3.4]",
        "fe80::1%2",
    ],
)
def test_garbage_entry_stops_at_the_last_good_hop(garbage: str) -> None:
    identity = _identity()
    assert identity.client_ip("10.0.0.1", _xff(f"198.51.100.1, {garbage}")) == "10.0.0.1"
    headers = _xff(f"198.51.100.1, {garbage}, 10.0.0.2")
    assert identity.client_ip("10.0.0.1", headers) == "10.0.0.2"
    # Garbage to the left of the client was written by the client and is never read.
    assert identity.client_ip("10.0.0.1", _xff(f"{garbage}, 198.51.100.1")) == "198.51.100.1"


def test_xff_takes_precedence_over_forwarded() -> None:
    identity = _identity()
    headers = _fwd("for=192.0.2.60") + _xff("198.51.100.1")
    assert identity.client_ip("10.0.0.1", headers) == "198.51.100.1"


# Forwarded (RFC 7239).


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=192.0.2.60", "192.0.2.60"),
        ("For=192.0.2.60;proto=https;by=203.0.113.43", "192.0.2.60"),
        ('for="192.0.2.60:8080"', "192.0.2.60"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ('for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"),
        ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
        ("for=192.0.2.43, for=10.0.0.7", "192.0.2.43"),
        ('for=192.0.2.43;by="x,y", for=10.0.0.7', "192.0.2.43"),  # comma inside quotes
        ('for="192.0.2.60:_hidden"', "192.0.2.60"),  # obfuscated port
        ("for = 192.0.2.60", "192.0.2.60"),
    ],
)
def test_forwarded_forms(value: str, expected: str) -> None:
    assert _identity().client_ip("10.0.0.1", _fwd(value)) == expected


@pytest.mark.parametrize(
    "value",
    [
        "for=unknown",
        "for=_hidden",
        'for="_gazonk"',
        "proto=https",  # no for=
        "for=192.0.2.1;for=192.0.2.2",  # two for= in one element
        "for=[2001:db8::1]:80x",
        "for",
        "garbage",
    ],
)
def test_forwarded_garbage_stops_the_walk(value: str) -> None:
    identity = _identity()
    assert identity.client_ip("10.0.0.1", _fwd(value)) == "10.0.0.1"
    assert identity.client_ip("10.0.0.1", _fwd(f"{value}, for=10.0.0.9")) == "10.0.0.9"
    assert identity.client_ip("10.0.0.1", _fwd(f"{value}, for=192.0.2.5")) == "192.0.2.5"


def test_forwarded_unterminated_quote_swallows_the_rest() -> None:
    identity = _identity()
    for value in ('for="192.0.2.60', 'for="192.0.2.60, for=10.0.0.9', 'for="\\'):
        assert identity.client_ip("10.0.0.1", _fwd(value)) == "10.0.0.1"
    assert identity.client_ip("10.0.0.1", _fwd('for="x', "for=192.0.2.5")) == "192.0.2.5"


def test_forwarded_several_headers_in_order() -> None:
    identity = _identity()
    headers = _fwd("for=192.0.2.1", "for=198.51.100.2, for=10.0.0.2")
    assert identity.client_ip("10.0.0.1", headers) == "198.51.100.2"


# Rate keys.


def test_ipv4_key_is_the_address() -> None:
    identity = _identity()
    assert identity.rate_key("198.51.100.1") == "198.51.100.1"
    assert identity.rate_key("198.51.100.1") != identity.rate_key("198.51.100.2")
    assert identity.rate_key("::ffff:198.51.100.1") == "198.51.100.1"


def test_ipv6_keyed_per_64() -> None:
    identity = _identity()
    a = identity.rate_key("2001:db8:1:2::1")
    b = identity.rate_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    c = identity.rate_key("2001:db8:1:3::1")
    assert a == b == "2001:db8:1:2::/64"
    assert c == "2001:db8:1:3::/64"
    assert identity.rate_key("fe80::1%eth0") == "fe80::/64"


def test_ipv6_prefix_is_configurable() -> None:
    identity = _identity(ipv6_prefix=48)
    assert identity.rate_key("2001:db8:1:2::1") == identity.rate_key("2001:db8:1:3::1")
    assert identity.rate_key("2001:db8:1:2::1") == "2001:db8:1::/48"
    assert _identity(ipv6_prefix=128).rate_key("2001:db8::1") == "2001:db8::1/128"


def test_rate_key_of_a_non_address_is_unchanged() -> None:
    assert _identity().rate_key("unix:/run/ws.sock") == "unix:/run/ws.sock"


def test_rate_keys_stay_right_through_a_flood_of_distinct_ips() -> None:
    # The remembered keys are bounded (least recently used go first), and every
    # answer is still the one computed from scratch.
    identity = _identity()
    for n in range(10_000):
        ip = f"2001:db8:{n >> 16:x}:{n & 0xFFFF:x}::{n % 7 + 1:x}"
        expected = str(ipaddress.ip_network(f"{ip}/64", strict=False))
        assert identity.rate_key(ip) == expected
        assert identity.rate_key(ip) == expected  # remembered
    assert identity.rate_key("198.51.100.7") == "198.51.100.7"
    assert _rate_key.cache_info().currsize <= 4096


# Exemptions.


def test_exempt_cidrs() -> None:
    identity = _identity(exempt_ips=("192.0.2.0/28", "2001:db8:aaaa::/48"))
    assert identity.is_exempt("192.0.2.1")
    assert identity.is_exempt("192.0.2.15")
    assert not identity.is_exempt("192.0.2.16")
    assert identity.is_exempt("::ffff:192.0.2.3")
    assert identity.is_exempt("2001:db8:aaaa:1::1")
    assert not identity.is_exempt("2001:db8:aaab::1")
    assert not identity.is_exempt("garbage")
    assert not _identity().is_exempt("192.0.2.1")  # empty by default


# Robustness.

_header_names = st.sampled_from(["x-forwarded-for", "forwarded", "host", "x-real-ip"])
_hop = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]:{80}"),
    st.sampled_from(["unknown", "_x", '"', ";", "=", "for=", "[", "]", "%", ",", " "]),
    st.text(max_size=20),
)
_value = st.one_of(
    st.text(max_size=200),
    st.lists(_hop, max_size=8).map(", ".join),
    st.lists(_hop, max_size=8).map(lambda hops: ", ".join(f"for={h}" for h in hops)),
)


@given(
    peer=st.one_of(st.sampled_from(["10.0.0.1", "2001:db8:ffff::1", "198.51.100.7"]), st.text()),
    headers=st.lists(st.tuples(_header_names, _value), max_size=5),
)
def test_client_ip_never_raises_and_returns_peer_or_an_address(
    peer: str, headers: list[tuple[str, str]]
) -> None:
    identity = _identity()
    result = identity.client_ip(peer, headers)
    if result != peer:
        ipaddress.ip_address(result)  # raises if not an address
        assert identity.is_trusted_proxy(peer)
    identity.rate_key(result)
