"""IP addresses and host names as the server judges them before connecting or letting others connect:
the cloud metadata services, names resolved off the event loop."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services (AWS, its IPv6 one, Oracle's IPv6 one, Alibaba's) and their names.
CLOUD_METADATA = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "fd00:ec2::254", "fd20:ce::254", "100.100.100.200")
)
METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"}
)
RESOLVE_SECONDS = 5.0


def ip(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def unwrapped(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) is the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_metadata_name(host: str) -> bool:
    return host.lower().rstrip(".") in METADATA_NAMES


async def resolve(host: str) -> list[Address]:
    """The system resolver, in the loop's executor, so a slow DNS server stalls no other call."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos}, key=str)


async def resolve_in_time(host: str) -> list[Address]:
    """`host`'s addresses (itself when it is one); empty when it does not resolve in RESOLVE_SECONDS."""
    literal = ip(host)
    if literal is not None:
        return [literal]
    try:
        return await asyncio.wait_for(resolve(host), RESOLVE_SECONDS)
    except (OSError, TimeoutError):
        return []
