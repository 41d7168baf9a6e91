"""Who listens on a port: the kernel's socket tables and the processes holding the sockets."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Listener:
    address: Address
    port: int
    inode: int


def _address(hex_address: str) -> Address:
    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listening(net_dir: Path = Path("/proc/net")) -> Iterator[Listener]:
    """Every listening TCP socket in the network namespace `net_dir` belongs to (/proc/net: this
    process's; /proc/<pid>/net: that process's)."""
    for table in ("tcp", "tcp6"):
        try:
            lines = (net_dir / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == LISTEN:
                hex_address, _, hex_port = fields[1].partition(":")
                yield Listener(_address(hex_address), int(hex_port, 16), int(fields[9]))


def listeners(port: int, net_dir: Path = Path("/proc/net")) -> list[Listener]:
    """The sockets listening on `port`."""
    return [listener for listener in listening(net_dir) if listener.port == port]


def listening_addresses(net_dir: Path = Path("/proc/net")) -> set[Address]:
    """Every address some socket listens on, on any port."""
    return {listener.address for listener in listening(net_dir)}


def group_holds(group: int, inodes: set[int]) -> bool:
    """Whether a process of process group `group` holds one of the sockets `inodes`."""
    if not inodes:
        return False
    wanted = {f"socket:[{inode}]" for inode in inodes}
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    for pid in pids:
        try:
            stat = Path("/proc", pid, "stat").read_text()
            if stat[stat.rindex(")") + 2 :].split()[2] != str(group):
                continue
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except (OSError, ValueError, IndexError):
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{descriptor}") in wanted:
                    return True
            except OSError:
                continue
    return False
