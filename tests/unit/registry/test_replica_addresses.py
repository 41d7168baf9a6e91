"""The address rules, with a resolver that answers from a table."""

from __future__ import annotations

import ipaddress

import pytest

from services.common.addresses import Address
from services.common.errors import InvalidArgument
from services.registry.host_networks import parse_fib_trie, parse_if_inet6
from services.registry.replica_addresses import AddressRules, Claim, SystemResolver, claim

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.168.7.0/24 2 0 2
           |-- 192.168.7.0
              /24 link UNICAST
           |-- 192.168.7.20
              /32 host LOCAL
           |-- 192.168.7.21
              /32 host LOCAL
"""
IF_INET6 = "fd000000000000000000000000000002 04 40 00 82     eth0\n"


class TableResolver:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(self, host: str) -> list[Address]:
        if host not in self.table:
            raise OSError("no such host")
        return [ipaddress.ip_address(address) for address in self.table[host]]


RULES = AddressRules(
    gateway="gw",
    gateway_host=frozenset({ipaddress.ip_address("203.0.113.7")}),
    server_host=frozenset(parse_fib_trie(FIB_TRIE) | parse_if_inet6(IF_INET6)),
    replica_subnet=ipaddress.ip_network("10.213.0.0/16"),
)
RESOLVER = TableResolver({"twice.test": ["10.0.0.8", "127.0.0.1"], "fine.test": ["10.0.0.8", "fd12::8"]})


def test_this_machines_addresses_are_read_from_the_kernel_tables() -> None:
    assert {str(network) for network in RULES.server_host} == {
        "127.0.0.0/8",
        "192.168.7.20/32",
        "192.168.7.21/32",
        "fd00::2/128",
    }


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("192.168.7.21:80", "the Gatehouse server's host"),
        ("[fd00::2]:80", "the Gatehouse server's host"),
        ("203.0.113.7:443", 'gateway "gw"\'s host'),
        ("twice.test:80", "twice.test resolves to 127.0.0.1, which is loopback"),
        ("[::ffff:169.254.169.254]:80", "metadata"),
        ("240.0.0.1:80", "reserved"),
        ("0.1.2.3:80", "unspecified"),
    ],
)
async def test_refused(address: str, reason: str) -> None:
    refusal = RULES.refusal(await claim(address, RESOLVER))
    assert refusal is not None and reason in refusal and "\n" not in refusal


@pytest.mark.parametrize("address", ["10.0.0.8:80", "192.168.7.22:80", "fine.test:8000", "198.51.100.4:80"])
async def test_allowed(address: str) -> None:
    assert RULES.refusal(await claim(address, RESOLVER)) is None


async def test_replica_networks_hold_every_resolved_address() -> None:
    narrowed = AddressRules(
        "gw",
        frozenset(),
        frozenset(),
        ipaddress.ip_network("10.213.0.0/16"),
        (ipaddress.ip_network("10.0.0.0/8"),),
    )
    assert narrowed.refusal(Claim("10.0.0.8:80", "10.0.0.8", (ipaddress.ip_address("10.0.0.8"),))) is None
    refusal = narrowed.refusal(await claim("fine.test:8000", RESOLVER))
    assert refusal is not None and "fd12::8" in refusal and "10.0.0.0/8" in refusal


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("nonsense", "is not host:port"),
        ("10.0.0.1:0", "is not host:port"),
        ("bad host!:80", "neither an IP address nor a host name"),
        ("nowhere.test:80", "does not resolve"),
        ("metadata.google.internal.:80", "cloud metadata service"),
    ],
)
async def test_malformed_or_unresolvable(address: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await claim(address, RESOLVER)


async def test_the_system_resolver_gives_every_address_of_a_name() -> None:
    found = await claim("localhost:80", SystemResolver())
    assert found.is_name and ipaddress.ip_address("127.0.0.1") in found.addresses
