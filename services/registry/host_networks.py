"""The addresses of this machine, read from the kernel: a replica registered at one of them would
send gateway traffic to the Gatehouse server's own host (its API, its local gateways' Envoys)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from services.common.addresses import Network

FIB_TRIE = Path("/proc/net/fib_trie")
IF_INET6 = Path("/proc/net/if_inet6")


def parse_fib_trie(text: str) -> set[Network]:
    """The `host LOCAL` routes: every IPv4 address (or range, like 127.0.0.0/8) the kernel answers
    itself, secondary addresses included."""
    networks: set[Network] = set()
    leaf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            leaf = stripped.removeprefix("|--").strip()
        elif stripped.startswith("+--"):
            leaf = ""
        elif leaf and stripped.startswith("/") and stripped.endswith("host LOCAL"):
            prefix = stripped.split()[0]
            networks.add(ipaddress.ip_network(f"{leaf}{prefix}", strict=False))
    return networks


def parse_if_inet6(text: str) -> set[Network]:
    networks: set[Network] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            networks.add(ipaddress.IPv6Network(int(fields[0], 16)))
    return networks


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def machine_networks() -> frozenset[Network]:
    """Every address of this machine's interfaces (in the server's network namespace)."""
    return frozenset(parse_fib_trie(_read(FIB_TRIE)) | parse_if_inet6(_read(IF_INET6)))
