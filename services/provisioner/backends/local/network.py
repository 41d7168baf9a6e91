"""Where local replicas listen.

Where this machine lets the server make network namespaces (root, `ip` from iproute2), each replica
gets one of its own, as on a VM or in a pod: its own loopback, and a point-to-point veth pair whose
host end and replica end are the two addresses of a /31 of the replica network. So `port: 8000`
means port 8000 inside every replica, replicas of different services (and projects) never see each
other's ports, and only the replica's own processes can answer on its address. Replicas reach this
machine at the host end (their default route); the outside only where the host forwards and
masquerades the replica network; another replica never (a routing rule per replica prohibits it,
forwarding or not).

Elsewhere every replica shares this machine's network, as before: replica 0 listens on the
service's port, the others on ports of their own, and readiness asks which process owns the
listening socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
# Every server on this machine allocates from one network: they take turns under this lock (which
# also holds the place of the last /31 given out), and an address is taken once it is on a host
# interface.
ALLOCATION_LOCK = Path("/run/gatehouse-replica-network.lock")
STATE_FILE = "network.json"
LOOPBACK = "127.0.0.1"


class NetworkError(Exception):
    """The replica's network could not be made: the replica fails with this message."""


@dataclass(frozen=True)
class ReplicaEndpoint:
    # Where Envoy reaches the replica.
    address: str
    # The replica's command runs behind this (entering its namespace).
    command_prefix: tuple[str, ...] = ()


class ReplicaNetwork(Protocol):
    # True: each replica has its own network, so every replica listens on the service's port.
    isolated: bool

    async def attach(self, directory: Path) -> ReplicaEndpoint:
        """The replica's network, made if missing; kept in `directory` across server restarts."""
        ...

    async def detach(self, directory: Path) -> None:
        """Removes what `attach` made; safe to call again."""
        ...


class HostNetwork:
    isolated = False

    async def attach(self, directory: Path) -> ReplicaEndpoint:
        return ReplicaEndpoint(LOOPBACK)

    async def detach(self, directory: Path) -> None:
        return None


@dataclass(frozen=True)
class _Names:
    namespace: str
    host_link: str
    peer_link: str


def _names(directory: Path) -> _Names:
    """Names unique to the replica's directory (so two servers' replicas never share one), short
    enough for interface names (15 bytes)."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    return _Names(namespace=f"gh-{digest}", host_link=f"gh{digest}", peer_link=f"gp{digest}")


async def _ip(*args: str, check: bool = True) -> str:
    process = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    out, err = await process.communicate()
    if check and process.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode()


class NamespaceNetwork:
    isolated = True

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        self._subnet = subnet
        self._lock = asyncio.Lock()

    async def attach(self, directory: Path) -> ReplicaEndpoint:
        names = _names(directory)
        state = directory / STATE_FILE
        with contextlib.suppress(OSError, ValueError, KeyError):
            recorded = json.loads(state.read_text())
            if await self._intact(names):
                return self._endpoint(names, recorded["replica"])
        await self.detach(directory)
        async with self._lock:
            replica = await asyncio.to_thread(self._allocate_and_make, names)
        directory.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"replica": replica, "namespace": names.namespace}) + "\n")
        return self._endpoint(names, replica)

    async def detach(self, directory: Path) -> None:
        names = _names(directory)
        if (NETNS_DIR / names.namespace).exists():
            await _ip("netns", "delete", names.namespace, check=False)
        await _ip("link", "delete", names.host_link, check=False)
        await _ip("rule", "delete", *self._isolation_rule(names), check=False)
        (directory / STATE_FILE).unlink(missing_ok=True)

    def _isolation_rule(self, names: _Names) -> list[str]:
        return ["iif", names.host_link, "to", str(self._subnet), "prohibit"]

    @staticmethod
    def _endpoint(names: _Names, replica: str) -> ReplicaEndpoint:
        return ReplicaEndpoint(replica, ("ip", "netns", "exec", names.namespace))

    @staticmethod
    async def _intact(names: _Names) -> bool:
        if not (NETNS_DIR / names.namespace).exists():
            return False
        return bool((await _ip("-o", "link", "show", names.host_link, check=False)).strip())

    def _allocate_and_make(self, names: _Names) -> str:
        """Runs in a thread: the lock is a file lock shared with every server on this machine."""
        with open(ALLOCATION_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # An address of a replica that is gone must fail at once, here: never leave this machine
            # by its default route (each replica's /31 is more specific while it exists).
            subprocess.run(["ip", "route", "replace", "unreachable", str(self._subnet)], capture_output=True)
            host, replica = self._free_pair()
            try:
                self._make(names, host, replica)
            except NetworkError:
                for undo in (
                    ["netns", "delete", names.namespace],
                    ["link", "delete", names.host_link],
                    ["rule", "delete", *self._isolation_rule(names)],
                ):
                    subprocess.run(["ip", *undo], capture_output=True, check=False)
                raise
        return str(replica)

    def _free_pair(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        """The next free /31 after the last one given out (the lock file keeps its place), so an
        address a replica just left is not handed to another service while gateways may still route
        to it."""
        shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True)
        taken = set()
        for line in shown.stdout.splitlines():
            fields = line.split()
            if "inet" in fields:
                taken.add(ipaddress.ip_interface(fields[fields.index("inet") + 1]).ip)
        pairs = list(self._subnet.subnets(new_prefix=31))
        try:
            last = int(ALLOCATION_LOCK.read_text().strip() or -1)
        except (OSError, ValueError):
            last = -1
        for step in range(1, len(pairs) + 1):
            index = (last + step) % len(pairs)
            host, replica = pairs[index][0], pairs[index][1]
            if host not in taken and replica not in taken:
                ALLOCATION_LOCK.write_text(f"{index}\n")
                return host, replica
        raise NetworkError(f"no address is free in the replica network {self._subnet}")

    def _make(self, names: _Names, host: ipaddress.IPv4Address, replica: ipaddress.IPv4Address) -> None:
        ns = names.namespace
        steps = [
            ["netns", "add", ns],
            ["link", "add", names.host_link, "type", "veth", "peer", "name", names.peer_link, "netns", ns],
            ["addr", "add", f"{host}/31", "dev", names.host_link],
            ["link", "set", names.host_link, "up"],
            ["-n", ns, "link", "set", "lo", "up"],
            ["-n", ns, "link", "set", names.peer_link, "name", "eth0"],
            ["-n", ns, "addr", "add", f"{replica}/31", "dev", "eth0"],
            ["-n", ns, "link", "set", "eth0", "up"],
            ["-n", ns, "route", "add", "default", "via", str(host)],
            # Even where this machine forwards packets, nothing from a replica is routed to another.
            ["rule", "add", *self._isolation_rule(names)],
        ]
        for step in steps:
            done = subprocess.run(["ip", *step], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise NetworkError(f"ip {' '.join(step)}: {done.stderr.strip()}")


def namespaces_available() -> bool:
    """Whether this server can make network namespaces: tried once, with one that is removed."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"gh-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    return made.returncode == 0


def replica_network(mode: str, subnet: str) -> ReplicaNetwork:
    """`mode`: namespace, host, or auto (namespaces where they can be made)."""
    if mode not in ("auto", "namespace", "host"):
        raise SystemExit(f"error: GATEHOUSE_LOCAL_REPLICA_NETWORK={mode!r}: use auto, namespace or host")
    try:
        network = ipaddress.IPv4Network(subnet)
    except ValueError:
        raise SystemExit(f"error: GATEHOUSE_LOCAL_REPLICA_SUBNET={subnet!r} is not an IPv4 network") from None
    if mode == "host":
        return HostNetwork()
    if namespaces_available():
        return NamespaceNetwork(network)
    if mode == "namespace":
        raise SystemExit(
            "error: GATEHOUSE_LOCAL_REPLICA_NETWORK=namespace, but this server cannot make network "
            "namespaces (it needs root and `ip` from iproute2)"
        )
    log.warning("local replicas share this machine's network: network namespaces need root and `ip`")
    return HostNetwork()
