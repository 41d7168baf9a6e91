"""A registered address is a claim: the gateway will send a service's traffic there. Addresses that
would reach the gateway host itself, the cloud's metadata service or the local runner's replicas of
other projects are refused; a gateway's `replica_networks` narrows the rest.

Host names are resolved off the event loop, and every address they resolve to is held to the rules."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from services.common.addresses import (
    CLOUD_METADATA,
    RESOLVE_SECONDS,
    Address,
    Network,
    ip,
    is_metadata_name,
    resolve,
    unwrapped,
)
from services.common.errors import InvalidArgument

HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
ELSEWHERE = (
    "register an address the gateway reaches over the network, or run `gatehouse agent` beside the replica"
)


@dataclass(frozen=True)
class Claim:
    """A replica address as registered, with the IP addresses it stands for."""

    text: str
    host: str
    addresses: tuple[Address, ...]

    @property
    def is_name(self) -> bool:
        return ip(self.host) is None


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[Address]: ...


class SystemResolver:
    """The system resolver, in the loop's executor, so a slow DNS server stalls no other call."""

    async def resolve(self, host: str) -> list[Address]:
        return await resolve(host)


def split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidArgument(
            f"replica address {text!r} is not host:port (for example 10.0.0.5:8000 or [fd00::5]:8000)"
        )
    if ip(host) is None and not HOST_NAME.match(host):
        raise InvalidArgument(f"replica address {text!r}: {host!r} is neither an IP address nor a host name")
    return host, int(port)


async def claim(text: str, resolver: Resolver) -> Claim:
    """`text` parsed and resolved; INVALID_ARGUMENT when it is malformed or does not resolve."""
    host, _ = split_host_port(text)
    literal = ip(host)
    if literal is not None:
        return Claim(text, host, (literal,))
    if is_metadata_name(host):
        raise InvalidArgument(f"replica address {text} is refused: {host} is the cloud metadata service")
    try:
        addresses = await asyncio.wait_for(resolver.resolve(host), RESOLVE_SECONDS)
    except (OSError, TimeoutError):
        addresses = []
    if not addresses:
        raise InvalidArgument(f"replica address {text}: the host name {host} does not resolve")
    return Claim(text, host, tuple(addresses))


def _special(address: Address) -> str | None:
    if address.is_unspecified or address in THIS_NETWORK:
        return "is unspecified (this host)"
    if address.is_loopback:
        return "is loopback (the gateway's own host)"
    if address in CLOUD_METADATA:
        return "is the cloud metadata service"
    if address.is_link_local:
        return "is link-local"
    if address.is_multicast:
        return "is multicast"
    if address.is_reserved:
        return "is reserved"
    return None


@dataclass(frozen=True)
class AddressRules:
    """What one gateway's replicas may be registered at."""

    gateway: str
    gateway_host: frozenset[Address]
    server_host: frozenset[Network]
    replica_subnet: Network
    # The gateway's `replica_networks`; empty: any address the other rules allow.
    allowed: tuple[Network, ...] = ()

    def _reason(self, address: Address) -> str | None:
        if (special := _special(address)) is not None:
            return special
        if address in self.gateway_host:
            return f'is an address of gateway "{self.gateway}"\'s host'
        if any(address in network for network in self.server_host):
            return "is an address of the Gatehouse server's host"
        if address in self.replica_subnet:
            return f"is in the local runner's replica network {self.replica_subnet}"
        return None

    def refusal(self, found: Claim) -> str | None:
        """The one line that refuses `found`, or None when every address it stands for is allowed."""
        for original in found.addresses:
            address = unwrapped(original)
            subject = f"{found.host} resolves to {original}, which" if found.is_name else str(original)
            reason = self._reason(address)
            if reason is not None:
                return f"replica address {found.text} is refused: {subject} {reason}; {ELSEWHERE}"
            if self.allowed and not any(address in network for network in self.allowed):
                networks = ", ".join(str(network) for network in self.allowed)
                return (
                    f"replica address {found.text} is refused: {subject} is outside the replica_networks "
                    f'of gateway "{self.gateway}" ({networks}); a project admin of the gateway can add it'
                )
        return None


def ip_addresses(values: Iterable[str]) -> frozenset[Address]:
    """The IP addresses among `values`; host names and empty strings are left out."""
    found = (ip(value.strip().strip("[]")) for value in values)
    return frozenset(address for address in found if address is not None)
