"""A cloud host whose Envoy never connects, judged and replaced as the reconciler does
(`Provisioner._until_serving` and `_replace`), against one cloud's backend and fake: the deadline
counts from the launch time the cloud gives (so a provisioner that just started, remembering nothing,
still judges a host made long ago), and the gateway's message ends with what the host printed."""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse.v1 import resources_pb2
from services.provisioner.backends.base import GatewayHost
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.serving import HostWatch, judge
from tests.integration.provisioner.harness import converge

DEADLINE_SECONDS = 600.0


@dataclass(frozen=True)
class Replaced:
    hosts: tuple[GatewayHost, ...]
    # The gateway's message once they were replaced, and each host's whole console output.
    message: str
    outputs: tuple[str | None, ...]


async def never_connecting(backend: CloudGatewayBackend, gw: resources_pb2.Gateway) -> Replaced:
    """Makes the gateway's hosts; as a freshly started provisioner, finds them not yet overdue just
    inside the deadline from their launch and overdue just past it; replaces them, each console shown."""
    hosts = (await converge(backend, gw)).hosts
    assert hosts and all(host.launched_at is not None for host in hosts), hosts
    launched = max(host.launched_at or 0.0 for host in hosts)
    early = judge(gw.id, hosts, [], 1, HostWatch(), launched + DEADLINE_SECONDS - 5, DEADLINE_SECONDS)
    assert not early.overdue, early
    # A provisioner started after the deadline passed: it has never seen these hosts.
    now = launched + DEADLINE_SECONDS + 5
    watch = HostWatch()
    verdict = judge(gw.id, hosts, [], 1, watch, now, DEADLINE_SECONDS)
    assert verdict.overdue == list(hosts), verdict
    replaced = []
    for host in verdict.overdue:
        output = await backend.host_output(gw, host)
        await backend.replace_host(gw, host)
        reason = f"host {host.index}'s Envoy did not connect within {DEADLINE_SECONDS:.0f}s"
        replaced.append((host, reason, output))
    message = watch.replaced_hosts(replaced, now)
    return Replaced(tuple(hosts), message, tuple(output for _, _, output in replaced))
