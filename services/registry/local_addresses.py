"""Where local gateways bind: one address each on this machine, so no two Envoys share a port.

A gateway without `address` gets the lowest free loopback address from 127.0.0.2 up (all of
127.0.0.0/8 is loopback on Linux; 127.0.0.1 stays the control plane's), stored in its spec at
creation and kept, as an allocated cluster IP is. Addresses are compared across every project:
two gateways overlap when their addresses are equal or either is unspecified (0.0.0.0, ::). An
address something on this machine already listens on (another server's gateway) is passed over.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from services.common.errors import AlreadyExists, FailedPrecondition
from services.common.listening import listening_addresses
from services.registry.configurations import GatewayConfig
from services.registry.convert import gateway_config
from services.registry.models import GatewayRow

LOOPBACK_POOL = ipaddress.ip_network("127.0.0.0/8")
FIRST_ALLOCATED = ipaddress.ip_address("127.0.0.2")


def overlap(first: str, second: str) -> bool:
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(second)
    if a.version != b.version:
        return False
    return a == b or a.is_unspecified or b.is_unspecified


def _taken(rows: Sequence[GatewayRow], exclude_id: str | None) -> list[str]:
    taken = []
    for other in rows:
        if other.id == exclude_id:
            continue
        config = gateway_config(other)
        if config.backend == "local" and config.address is not None:
            taken.append(config.address)
    return taken


def _allocate(taken: list[str]) -> str:
    used = {ipaddress.ip_address(address) for address in taken}
    if any(address.is_unspecified and address.version == 4 for address in used):
        raise FailedPrecondition(
            "another local gateway binds 0.0.0.0 (every address of this machine): "
            "give this gateway an `address` after changing that one, or delete it"
        )
    used |= listening_addresses()
    candidate = FIRST_ALLOCATED
    while candidate in used:
        candidate += 1
        if candidate not in LOOPBACK_POOL or candidate == LOOPBACK_POOL.broadcast_address:
            raise FailedPrecondition("no loopback address is free for another local gateway")
    return str(candidate)


def place(config: GatewayConfig, row: GatewayRow | None, gateways: Sequence[GatewayRow]) -> GatewayConfig:
    """`config` with its address: the one configured, else the one it was given, else a new one.

    Called inside the apply's transaction, after its revision lock, so two applies cannot take one
    address."""
    if config.backend != "local":
        return config
    kept = gateway_config(row).address if row is not None else None
    taken = _taken(gateways, row.id if row is not None else None)
    if config.address is None:
        if kept is not None:
            return config.model_copy(update={"address": kept})
        return config.model_copy(update={"address": _allocate(taken)})
    for other in taken:
        if overlap(config.address, other):
            raise AlreadyExists(
                f"address {config.address} is taken by another gateway on this machine "
                f"({other}): choose another `address`, or leave it out to get a free one"
            )
    return config
