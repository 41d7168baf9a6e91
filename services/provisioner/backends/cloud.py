"""The shape every cloud backend shares: one reconcile algorithm over a small per-cloud driver.

A driver makes synchronous SDK calls (boto3, google-cloud-compute, the Azure and Kubernetes clients
all block); the backend runs it in a worker thread. Hosts are found by the gateway's tag every time,
never remembered, so a crash between a cloud call and the registry write is harmless: the next pass
finds what the last one made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from gatehouse.v1 import resources_pb2
from services.provisioner.backends.base import BackendError, GatewayHost, HostInfo, NotReady
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from services.provisioner.hosts.startup import DEFAULT_REGISTRY_MIRROR, ENVOY_IMAGE
from services.provisioner.join import JoinSetup

MappedPorts = Callable[[str], frozenset[int]]
T = TypeVar("T")

log = logging.getLogger(__name__)


def no_mapped_ports(gateway_id: str) -> frozenset[int]:
    return frozenset()


def refuse_acm(plan: GatewayPlan, cloud: str) -> None:
    if plan.acm_certificate_arn is not None:
        raise BackendError(f"{cloud}: certificate: acm is AWS Certificate Manager: it needs an aws gateway")


@dataclass(frozen=True)
class CloudHost:
    """One gateway host as the cloud lists it."""

    index: int
    id: str
    fingerprint: str
    # Booted far enough to have its addresses; Envoy's own state is reported by gateway_xds.
    running: bool
    public_address: str | None = None
    private_address: str | None = None
    # Will not run on its own (stopped, failed to provision): it is replaced.
    failed: bool = False
    # When the cloud made it, in seconds since the epoch (AWS LaunchTime, GCP creationTimestamp,
    # Azure timeCreated, a Deployment's creationTimestamp); None: unknown. A host whose Envoy has
    # not connected some time after this is replaced.
    launched_at: float | None = None


class HostDriver(Protocol):
    """One cloud's calls for one backend configuration. Every method is idempotent."""

    def instance_type(self, plan: GatewayPlan) -> str:
        """The instance type hosts get (the small default, or the one asked for once checked)."""
        ...

    def prepare(self, plan: GatewayPlan) -> None:
        """What the hosts share: network choice, firewall rules or security groups (with the ports)."""
        ...

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        """The gateway's hosts, found by its tag; hosts already going away are left out."""
        ...

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None: ...

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        """Removes a host. While its slot is wanted (index < replicas) its public address stays for
        the replacement, so the gateway's address and the DNS records pointing at it hold."""
        ...

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        """Addresses and load balancers in front of running hosts (listed by index)."""
        ...

    def delete_all(self, plan: GatewayPlan) -> list[str]:
        """Starts removing everything tagged with the gateway; returns what is still going away."""
        ...

    def translate(self, error: Exception) -> Exception:
        """BackendError (one line, the cloud's words) for what the user must fix; `error` otherwise."""
        ...


@runtime_checkable
class ConsoleOutput(Protocol):
    """Optional for a driver: what a host printed while booting, shown when its Envoy never came
    (AWS GetConsoleOutput, GCP getSerialPortOutput, Azure boot diagnostics, a pod's logs)."""

    def console_output(self, plan: GatewayPlan, host: CloudHost) -> str | None:
        """The end of the host's console output; None when the cloud has none (yet)."""
        ...


def _order(fingerprint: str) -> Callable[[CloudHost], tuple[bool, bool, str]]:
    # For each slot, keep a current, running host before any other.
    return lambda host: (host.fingerprint != fingerprint, not host.running, host.id)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class CloudGatewayBackend:
    def __init__(
        self,
        name: str,
        driver: HostDriver,
        xds: XdsEndpoint,
        mapped_ports: MappedPorts = no_mapped_ports,
        join: JoinSetup | None = None,
        envoy_image: str = ENVOY_IMAGE,
        registry_mirror: str = DEFAULT_REGISTRY_MIRROR,
    ) -> None:
        """With `join`, each new host gets a join token for its client certificate (mTLS to gateway_xds).
        Hosts run `envoy_image`; VM hosts pull through `registry_mirror` (`hosts/startup.py`)."""
        self.name = name
        self.driver = driver
        self._xds = xds
        self._mapped_ports = mapped_ports
        self._join = join
        self._envoy = (envoy_image, registry_mirror)

    def plan(self, gateway: resources_pb2.Gateway) -> GatewayPlan:
        image, mirror = self._envoy
        plan = GatewayPlan.of(gateway, self._xds, self._mapped_ports(gateway.id))
        plan = dataclasses.replace(plan, envoy_image=image, registry_mirror=mirror)
        if self._join is None:
            return plan
        return dataclasses.replace(plan, join=self._join.endpoint, join_tokens=self._join.tokens)

    async def create_or_update(
        self, gateway: resources_pb2.Gateway, serving: Collection[str] | None = None
    ) -> HostInfo:
        return await asyncio.to_thread(
            self._translated, lambda plan: self.ensure(plan, serving), self.plan(gateway)
        )

    async def replace_host(self, gateway: resources_pb2.Gateway, host: GatewayHost) -> None:
        """Deletes the host (its slot's public address stays); the next pass makes a new one."""

        def delete(plan: GatewayPlan) -> None:
            for found in self.driver.hosts(plan):
                if found.id == host.id:
                    self.driver.delete_host(plan, found)

        await asyncio.to_thread(self._translated, delete, self.plan(gateway))

    async def host_output(self, gateway: resources_pb2.Gateway, host: GatewayHost) -> str | None:
        if not isinstance(self.driver, ConsoleOutput):
            return None
        driver = self.driver

        def output(plan: GatewayPlan) -> str | None:
            for found in driver.hosts(plan):
                if found.id == host.id:
                    return driver.console_output(plan, found)
            return None

        try:
            return await asyncio.to_thread(self._translated, output, self.plan(gateway))
        except Exception as error:  # the output only explains; its absence changes nothing
            log.warning("%s: no console output of host %s: %s", self.name, host.id, error)
            return None

    async def delete(self, gateway: resources_pb2.Gateway) -> None:
        remaining = await asyncio.to_thread(self._translated, self.driver.delete_all, self.plan(gateway))
        if remaining:
            raise NotReady("deleting: waiting for " + ", ".join(remaining))

    def _translated(self, step: Callable[[GatewayPlan], T], plan: GatewayPlan) -> T:
        try:
            return step(plan)
        except (BackendError, NotReady):
            raise
        except Exception as error:
            translated = self.driver.translate(error)
            if translated is error:
                raise
            raise translated from error

    def _slots(self, plan: GatewayPlan, fingerprint: str, prune: bool) -> dict[int, CloudHost]:
        """The host kept for each slot; with `prune`, surplus, duplicate and failed hosts are deleted."""
        slots: dict[int, CloudHost] = {}
        for host in sorted(self.driver.hosts(plan), key=_order(fingerprint)):
            if host.index >= plan.replicas or host.index in slots or host.failed:
                if prune:
                    self.driver.delete_host(plan, host)
            else:
                slots[host.index] = host
        return slots

    def ensure(self, plan: GatewayPlan, serving: Collection[str] | None = None) -> HostInfo:
        """One level-triggered pass: surplus hosts go, stale hosts are replaced one at a time,
        missing hosts are created; the front (addresses, load balancer) once all are running.

        With `serving` (the hosts whose Envoy serves), the next stale host goes only once every
        other serves, and a pass during a replacement returns the hosts with `pending` set (their
        Envoys are judged by the caller); without, it raises NotReady until the replacement is done."""
        driver = self.driver
        instance_type = driver.instance_type(plan)
        fingerprint = plan.host_fingerprint(instance_type)
        driver.prepare(plan)
        slots = self._slots(plan, fingerprint, prune=True)
        stale = [host for host in slots.values() if host.fingerprint != fingerprint]
        complete = len(slots) == plan.replicas and all(
            host.running and (serving is None or host.id in serving) for host in slots.values()
        )
        if stale and complete:
            # A rolling replacement: the others keep serving while this one is rebuilt.
            driver.delete_host(plan, stale[0])
            del slots[stale[0].index]
        missing = [index for index in range(plan.replicas) if index not in slots]
        for index in missing:
            driver.create_host(plan, index, instance_type, fingerprint)
        if missing:
            # Listed again: a host may be up at once (or not listed yet: then it is waited for).
            slots = self._slots(plan, fingerprint, prune=False)
        waiting = [index for index in range(plan.replicas) if index not in slots or not slots[index].running]
        if waiting:
            raise NotReady(f"waiting for {_plural(len(waiting), 'host')} to start")
        stale = [host for host in slots.values() if host.fingerprint != fingerprint]
        pending = f"replacing {_plural(len(stale), 'host')}" if stale else ""
        if pending and serving is None:
            raise NotReady(pending)
        hosts = [slots[index] for index in range(plan.replicas)]
        exposed = driver.expose(plan, hosts)
        listed = tuple(GatewayHost(host.index, host.id, host.launched_at) for host in hosts)
        return dataclasses.replace(exposed, hosts=listed, pending=pending)
