"""Who listens on a port: the kernel's socket tables and the processes holding the sockets."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"


@dataclass(frozen=True)
class Listener:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    inode: int


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listeners(port: int, net_dir: Path = Path("/proc/net")) -> list[Listener]:
    """The TCP sockets listening on `port` in the network namespace `net_dir` belongs to
    (/proc/net: this process's; /proc/<pid>/net: that process's)."""
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (net_dir / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            hex_address, _, hex_port = local.partition(":")
            if state == LISTEN and int(hex_port, 16) == port:
                found.append(Listener(_address(hex_address), port, inode))
    return found


def listening_addresses(
    net_dir: Path = Path("/proc/net"),
) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address some TCP socket listens on, on any port."""
    found = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (net_dir / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == LISTEN:
                found.add(_address(fields[1].partition(":")[0]))
    return found


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
