"""When a gateway's hosts serve: each host's Envoy has connected to gateway_xds and acknowledged the
gateway's current configuration. The cloud saying a VM runs proves nothing of the kind: a startup
script that failed (join retries used up, the apt lock held, the image pull refused) leaves a running
VM with no Envoy.

gateway_xds reports each Envoy on the gateway's status (`status.envoys`, node `gateway/<id>/<index>`:
connected, the revision acknowledged). A host's slot is its index, so a replacement host has the same
node id as the host it replaces. Where a replaced host may linger (a cloud VM shutting down), once a
slot's host has served, a new host there counts only after its slot's Envoy has been seen gone (the
old one disconnecting), so the old Envoy's reports are never taken for the new one's.

A host that has served is not judged again: an Envoy keeps serving its last configuration while the
control plane is away, so a disconnection never makes a gateway provisioning nor a host replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gatehouse.gateway_identity import node_id
from gatehouse.v1 import resources_pb2
from services.provisioner.backends.base import GatewayHost, HostInfo

# After replacing a host whose Envoy never connected, the next one comes after this, doubling while
# the slot's hosts keep failing.
REPLACE_BACKOFF_SECONDS = 10.0
MAX_REPLACE_BACKOFF_SECONDS = 600.0
# Of a replaced host's console output, what the gateway's message shows (the log has all of it).
SHOWN_OUTPUT_LINES = 5
SHOWN_OUTPUT_CHARS = 600


@dataclass
class HostWatch:
    """What the provisioner remembers of one gateway's hosts, in memory: after a restart a running
    gateway's hosts are taken as serving, and a provisioning gateway's are judged afresh."""

    # index -> id of the host whose Envoy served there.
    serving: dict[int, str] = field(default_factory=dict)
    # host id -> when the provisioner first listed it (for hosts the backend gives no launch time).
    first_seen: dict[str, float] = field(default_factory=dict)
    # New hosts in a slot that had served, whose slot's Envoy has been seen gone since.
    cleared: set[str] = field(default_factory=set)
    # index -> hosts replaced there in a row for not connecting, and why the last one was.
    failures: dict[int, int] = field(default_factory=dict)
    replaced: dict[int, str] = field(default_factory=dict)
    # No new host before this time (a back-off after a replacement), and what the gateway says then.
    hold_until: float = 0.0
    hold_message: str = ""
    # Whether this provisioner has judged the gateway's hosts since it started.
    judged: bool = False
    # The last pass of the backend: the gateway's generation, when, what it said.
    last_pass: tuple[int, float, HostInfo | None] = (0, 0.0, None)

    def passed(self, generation: int, when: float, host: HostInfo | None) -> None:
        self.last_pass = (generation, when, host)

    def recent_pass(self, generation: int, now: float, within: float) -> HostInfo | None:
        """What the backend said within `within` seconds for this generation of the gateway."""
        last_generation, when, host = self.last_pass
        return host if last_generation == generation and now - when < within else None

    def serving_ids(self) -> frozenset[str]:
        return frozenset(self.serving.values())

    def adopt(self, hosts: Iterable[GatewayHost]) -> None:
        """Hosts of a gateway found running when this provisioner started: they served then."""
        for host in hosts:
            self.serving.setdefault(host.index, host.id)

    def replaced_hosts(
        self,
        replaced: Sequence[tuple[GatewayHost, str, str | None]],
        now: float,
        backoff: float = REPLACE_BACKOFF_SECONDS,
    ) -> str:
        """Notes hosts just replaced, each with why and its console output; holds the next hosts
        back (`backoff`, doubling to 10 min for a slot failing in a row); returns the gateway's
        message."""
        failures = 0
        reasons = []
        for host, reason, output in replaced:
            # A replacement may keep the id (a Deployment made again under its name): its clock starts anew.
            self.first_seen.pop(host.id, None)
            self.failures[host.index] = self.failures.get(host.index, 0) + 1
            failures = max(failures, self.failures[host.index])
            tail = shown_output(output)
            self.replaced[host.index] = f"{reason}: {tail}" if tail else reason
            reasons.append(self.replaced[host.index])
        delay = min(MAX_REPLACE_BACKOFF_SECONDS, backoff * 2.0 ** (failures - 1))
        self.hold_until = now + delay
        self.hold_message = "; ".join(reasons) + f"; replaced, a new host in {delay:.0f}s"
        return self.hold_message

    def forget(self, hosts: Sequence[GatewayHost]) -> None:
        """Drops what is known of hosts no longer listed."""
        listed = {host.id for host in hosts}
        self.first_seen = {key: value for key, value in self.first_seen.items() if key in listed}
        self.cleared &= listed


@dataclass(frozen=True)
class Waiting:
    """A host whose Envoy does not serve yet."""

    host: GatewayHost
    connected: bool
    # Not connected within the deadline: to be replaced.
    overdue: bool
    # What the Envoy refuses of its configuration, as gateway_xds reports it.
    rejected: str = ""


@dataclass(frozen=True)
class Verdict:
    waiting: tuple[Waiting, ...]

    @property
    def serving(self) -> bool:
        return not self.waiting

    @property
    def overdue(self) -> list[GatewayHost]:
        return [waiting.host for waiting in self.waiting if waiting.overdue]

    def message(self) -> str:
        """The step each host is on: "waiting for Envoy on host 0 to connect" and the like."""
        parts = []
        unconnected = [w.host.index for w in self.waiting if not w.connected]
        if unconnected:
            parts.append(f"waiting for Envoy on {_hosts(unconnected)} to connect")
        for waiting in self.waiting:
            if waiting.connected:
                step = f"waiting for Envoy on host {waiting.host.index} to acknowledge its configuration"
                parts.append(f"{step} ({waiting.rejected})" if waiting.rejected else step)
        return "; ".join(parts)


def _hosts(indices: Sequence[int]) -> str:
    if len(indices) == 1:
        return f"host {indices[0]}"
    return "hosts " + ", ".join(str(index) for index in indices)


def judge(
    gateway_id: str,
    hosts: Sequence[GatewayHost],
    envoys: Iterable[resources_pb2.EnvoyStatus],
    revision: int,
    watch: HostWatch,
    now: float,
    deadline: float,
    lingering: bool = True,
) -> Verdict:
    """Which of `hosts` serve: their Envoy connected and acknowledged `revision` (the gateway's
    current one), and which have not connected within `deadline` seconds of being made. Notes each
    host that serves in `watch`. `lingering`: a replaced host may run on for a while (not so a local
    Envoy, which is stopped before its replacement starts)."""
    by_node = {envoy.node_id: envoy for envoy in envoys}
    waiting = []
    watch.forget(hosts)
    for host in hosts:
        if watch.serving.get(host.index) == host.id:
            continue
        envoy = by_node.get(node_id(gateway_id, host.index))
        connected = envoy is not None and envoy.connected
        since = watch.first_seen.setdefault(host.id, now)
        if host.launched_at is not None:
            since = host.launched_at
        overdue = now - since > deadline
        if lingering and host.index in watch.serving and host.id not in watch.cleared:
            # The slot's last host served: its Envoy (the same node) must be seen gone first.
            if connected:
                waiting.append(Waiting(host, connected=False, overdue=overdue))
                continue
            watch.cleared.add(host.id)
        if envoy is not None and connected and envoy.acked_revision >= revision:
            watch.serving[host.index] = host.id
            watch.failures.pop(host.index, None)
            watch.replaced.pop(host.index, None)
            continue
        rejected = envoy.rejected if envoy is not None else ""
        waiting.append(Waiting(host, connected, overdue=overdue and not connected, rejected=rejected))
    return Verdict(tuple(waiting))


def shown_output(output: str | None) -> str:
    """The last few non-empty lines of a host's console output, on one line."""
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    shown = " | ".join(lines[-SHOWN_OUTPUT_LINES:])
    return shown if len(shown) <= SHOWN_OUTPUT_CHARS else "…" + shown[-SHOWN_OUTPUT_CHARS:]
