"""The provisioner: reconciles gateways to hosts, and local services to replica processes
(local_services.py).

Level-triggered: each key is re-read from the watch-fed mirror every time, so a crash anywhere is
harmless and every step can run again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from gatehouse.client.mirror import Change, RegistryMirror, follow
from gatehouse.leadership import Leadership
from gatehouse.v1 import registry_pb2, resources_pb2
from services.common.workqueue import Result, WorkQueue, run_queues
from services.provisioner.backends.base import (
    BackendError,
    GatewayBackend,
    GatewayHost,
    HostInfo,
    NotReady,
    ReplacesHosts,
)
from services.provisioner.backends.factory import BackendFactory
from services.provisioner.backends.local.gateway import CONNECT_DEADLINE_SECONDS, LocalGatewayBackend
from services.provisioner.local_services import DRAIN_SECONDS, LocalServices
from services.provisioner.registered_probes import RegisteredProbes
from services.provisioner.registry_calls import ProvisionerStubs
from services.provisioner.runner import LocalRunner
from services.provisioner.serving import REPLACE_BACKOFF_SECONDS, HostWatch, judge

log = logging.getLogger(__name__)

GATEWAY_RECHECK_SECONDS = 30.0
MAX_DELETE_RETRY_SECONDS = 300.0
# How long a cloud host (VM or pod) has from being made until its Envoy connects: booting, Docker's
# install, the image pull and joining take a few minutes at most (`GATEHOUSE_HOST_CONNECT_TIMEOUT`).
HOST_CONNECT_DEADLINE_SECONDS = 600.0
# While a host's Envoy is awaited: how often the registry is asked about it, and the cloud about the
# hosts (the local backend is asked every time: it is quick).
ENVOY_CHECK_SECONDS = 0.25
ENVOY_POLL_SECONDS = 2.0
LOCAL_ENVOY_POLL_SECONDS = 0.1


def mapped_ports(mirror: RegistryMirror, gateway_id: str) -> frozenset[int]:
    """The ports services map on a gateway (seed 004's `port: "5001:8000"`): its hosts open them too."""
    return frozenset(
        service.spec.gateway_port for service in mirror.services_of(gateway_id) if service.spec.gateway_port
    )


def host_ports(mirror: RegistryMirror, gateway_id: str, agent_tunnel_port: int) -> frozenset[int]:
    """What a cloud gateway's hosts open besides :80 and :443: the mapped ports, and the port its
    agents' reverse tunnels arrive at (its listener takes only agents of the gateway, over mTLS)."""
    return mapped_ports(mirror, gateway_id) | {agent_tunnel_port}


class Provisioner:
    def __init__(
        self,
        stubs: ProvisionerStubs,
        backends: BackendFactory,
        local: LocalGatewayBackend,
        runner: LocalRunner,
        mirror: RegistryMirror | None = None,
        host_deadline: float = HOST_CONNECT_DEADLINE_SECONDS,
        clock: Callable[[], float] = time.time,
        replace_backoff: float = REPLACE_BACKOFF_SECONDS,
        drain: float = DRAIN_SECONDS,
    ) -> None:
        """`host_deadline`: seconds a cloud host has to connect its Envoy before it is replaced;
        `replace_backoff`: how long its replacement waits (doubling while hosts keep failing);
        `drain`: how long a local replica out of the endpoints runs on before it stops."""
        self._stubs = stubs
        self._backends = backends
        self._local = local
        self._runner = runner
        self.mirror = mirror or RegistryMirror()
        self._gateways = WorkQueue("gateways", self.reconcile_gateway, workers=4)
        self._services = WorkQueue("services", self.reconcile_service, workers=8)
        self._delete_failures: dict[str, int] = {}
        # Per gateway: what is known of its hosts' Envoys.
        self._hosts: dict[str, HostWatch] = {}
        self._host_deadline = host_deadline
        self._replace_backoff = replace_backoff
        self._clock = clock
        self._local_services = LocalServices(stubs, self.mirror, runner, self._services.add, drain)
        self._registered_probes = RegisteredProbes(stubs, self.mirror)

    async def run(self, leadership: Leadership | None = None) -> None:
        """Follows the registry; reconciles (and probes) while this copy leads (always, without
        `leadership`)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(follow(self._stubs.watch, self.mirror, self._on_change))
            group.create_task(
                run_queues([self._gateways, self._services], self._resync, leadership, self._stop_probing)
            )

    async def _stop_probing(self) -> None:
        await self._local_services.close()
        await self._registered_probes.close()

    async def _resync(self) -> None:
        # What is not in the registry is cleaned up: never judge that from a mirror not loaded yet.
        await self.mirror.loaded.wait()
        everything = Change(
            self.mirror.revision,
            gateways=frozenset(self.mirror.gateways),
            services=frozenset(self.mirror.services),
            resync=True,
        )
        await self._on_change(everything)

    async def _on_change(self, change: Change) -> None:
        self._registered_probes.sync()
        gateway_ids = set(change.gateways)
        service_ids = set(change.services)
        if change.resync:
            gateway_ids |= self._local.known_gateway_ids()
            service_ids |= self._runner.service_ids()
        # A service mapping a port on a gateway opens that port on the gateway's hosts.
        for service_id in change.services:
            service = self.mirror.services.get(service_id) or self.mirror.removed_services.get(service_id)
            if service is not None and service.spec.gateway_id:
                gateway_ids.add(service.spec.gateway_id)
        for gateway_id in gateway_ids:
            self._gateways.add(gateway_id)
        for service_id in service_ids:
            self._services.add(service_id)

    async def _gateway_status(self, gateway: resources_pb2.Gateway, **fields: object) -> None:
        status, before = resources_pb2.GatewayStatus(), resources_pb2.GatewayStatus()
        before.CopyFrom(gateway.status)
        del before.envoys[:]  # gateway_xds's to report, not written here
        status.CopyFrom(before)
        for name, value in fields.items():
            if isinstance(value, list):
                del getattr(status, name)[:]
                getattr(status, name).extend(value)
            else:
                setattr(status, name, value)
        if status != before:
            await self._stubs.gateways.UpdateStatus(
                registry_pb2.UpdateGatewayStatusRequest(id=gateway.id, status=status)
            )

    async def reconcile_gateway(self, gateway_id: str) -> Result:
        gateway = self.mirror.gateways.get(gateway_id)
        if gateway is None:
            self._hosts.pop(gateway_id, None)
            if gateway_id in self._local.known_gateway_ids():
                await self._local.delete(resources_pb2.Gateway(id=gateway_id))
            return Result()
        state = gateway.status.state
        if state == resources_pb2.GATEWAY_STATE_DELETING:
            self._hosts.pop(gateway_id, None)
            return await self._delete_gateway(gateway)
        if state == resources_pb2.GATEWAY_STATE_FAILED:
            return Result()
        if state in (resources_pb2.GATEWAY_STATE_SUBMITTED, resources_pb2.GATEWAY_STATE_UNSPECIFIED):
            await self._gateway_status(gateway, state=resources_pb2.GATEWAY_STATE_PROVISIONING, message="")
        watch = self._hosts.setdefault(gateway_id, HostWatch())
        held = watch.hold_until - self._clock()
        if held > 0:
            # A host was replaced for never connecting: the next one comes after a back-off.
            await self._gateway_status(
                gateway, state=resources_pb2.GATEWAY_STATE_PROVISIONING, message=watch.hold_message
            )
            return Result(requeue_after=held)
        try:
            await self._backends.prepare(gateway.spec.backend, gateway.project)
            backend = self._backends.get(gateway.spec.backend, gateway.project)
            if not gateway.status.backend_called:
                await self._gateway_status(gateway, backend_called=True)
                gateway.status.backend_called = True
            # While only Envoys are awaited, they are looked at often and the cloud less so.
            host = watch.recent_pass(gateway.generation, self._clock(), ENVOY_POLL_SECONDS)
            if host is None or backend is self._local:
                host = await backend.create_or_update(gateway, serving=watch.serving_ids())
                watch.passed(gateway.generation, self._clock(), host)
        except NotReady as pending:
            watch.passed(gateway.generation, 0.0, None)
            await self._gateway_status(
                gateway, state=resources_pb2.GATEWAY_STATE_PROVISIONING, message=str(pending)
            )
            return Result(requeue_after=pending.retry_after)
        except BackendError as error:
            watch.passed(gateway.generation, 0.0, None)
            await self._gateway_status(gateway, state=resources_pb2.GATEWAY_STATE_FAILED, message=str(error))
            return Result()
        return await self._until_serving(gateway, backend, host, watch)

    async def _until_serving(
        self, gateway: resources_pb2.Gateway, backend: GatewayBackend, host: HostInfo, watch: HostWatch
    ) -> Result:
        """Running once every host's Envoy has connected and acknowledged the gateway's current
        configuration (`serving`); until then provisioning with the step each host is on. A host
        whose Envoy has not connected within the deadline is replaced, its console output shown."""
        where: dict[str, object] = {
            "hostname": host.hostname,
            "listen_address": host.listen_address,
            "http_port": host.http_port,
            "https_port": host.https_port,
            "addresses": list(host.addresses or (host.hostname,)),
        }
        hosts = host.hosts or tuple(GatewayHost(index, "") for index in range(max(1, gateway.spec.replicas)))
        if not watch.judged and gateway.status.state == resources_pb2.GATEWAY_STATE_RUNNING:
            watch.adopt(hosts)  # running before this provisioner started: they served then
        watch.judged = True
        current = await self._current(gateway)
        if current is None:
            return Result()
        # Listeners follow the address and ports written here: a configuration without them is not
        # the current one.
        revision = current.resource_version + (0 if _shows(current.status, where) else 1)
        local = backend is self._local
        deadline = CONNECT_DEADLINE_SECONDS if local else self._host_deadline
        now = self._clock()
        verdict = judge(
            gateway.id, hosts, current.status.envoys, revision, watch, now, deadline, lingering=not local
        )
        if verdict.serving and not host.pending:
            watch.passed(gateway.generation, 0.0, None)  # the next pass asks the cloud again
            await self._gateway_status(
                current, state=resources_pb2.GATEWAY_STATE_RUNNING, message="", **where
            )
            return Result(requeue_after=GATEWAY_RECHECK_SECONDS)
        if verdict.overdue and isinstance(backend, ReplacesHosts):
            message = await self._replace(gateway, backend, verdict.overdue, watch, deadline)
            watch.passed(gateway.generation, 0.0, None)
            await self._gateway_status(
                current, state=resources_pb2.GATEWAY_STATE_PROVISIONING, message=message, **where
            )
            return Result(requeue_after=max(0.0, watch.hold_until - now))
        message = "; ".join(part for part in (host.pending, verdict.message()) if part)
        if watch.replaced:
            replaced = "; ".join(watch.replaced.values())
            message += f" (replaced {_plural(len(watch.replaced), 'host')}: {replaced})"
        await self._gateway_status(
            current, state=resources_pb2.GATEWAY_STATE_PROVISIONING, message=message, **where
        )
        return Result(requeue_after=LOCAL_ENVOY_POLL_SECONDS if local else ENVOY_CHECK_SECONDS)

    async def _current(self, gateway: resources_pb2.Gateway) -> resources_pb2.Gateway | None:
        """The gateway as the registry has it now, with its Envoys as gateway_xds last reported them
        (Envoy reports are not on the watch feed)."""
        request = registry_pb2.GetRequest(project=gateway.project, name=gateway.name)
        try:
            current = await self._stubs.gateways.Get(request)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return current if current.id == gateway.id else None

    async def _replace(
        self,
        gateway: resources_pb2.Gateway,
        backend: ReplacesHosts,
        overdue: list[GatewayHost],
        watch: HostWatch,
        deadline: float,
    ) -> str:
        """Deletes hosts whose Envoy never connected (their console output logged, its end shown) and
        holds their replacements back: 10 s, doubling to 10 min, for hosts failing in a row."""
        replaced = []
        for host in overdue:
            output = await backend.host_output(gateway, host)
            log.warning(
                "gateway %s: host %d (%s): Envoy did not connect within %.0fs; replacing the host. "
                "Its console output ends:\n%s",
                gateway.name, host.index, host.id, deadline, output or "(none)",
            )  # fmt: skip
            await backend.replace_host(gateway, host)
            replaced.append(
                (host, f"host {host.index}'s Envoy did not connect within {deadline:.0f}s", output)
            )
        return watch.replaced_hosts(replaced, self._clock(), self._replace_backoff)

    async def _delete_gateway(self, gateway: resources_pb2.Gateway) -> Result:
        """Finalizes only once the backend says everything it made is gone, so nothing leaks."""
        try:
            await self._backends.prepare(gateway.spec.backend, gateway.project)
            backend = self._backends.get(gateway.spec.backend, gateway.project)
        except BackendError as error:
            if gateway.status.backend_called and self._backends.knows(gateway.spec.backend):
                # Its hosts may still exist: wait for credentials rather than leave them behind.
                failures = self._delete_failures.get(gateway.id, 0) + 1
                self._delete_failures[gateway.id] = failures
                await self._gateway_status(gateway, message=f"cannot delete the hosts yet: {error}")
                return Result(requeue_after=min(MAX_DELETE_RETRY_SECONDS, 5.0 * 2.0**failures))
            # A backend this server cannot run at all made nothing this server could clean up.
            log.warning("gateway %s: deleting without cleaning up its hosts: %s", gateway.name, error)
        else:
            try:
                await backend.delete(gateway)
            except NotReady as pending:
                await self._gateway_status(gateway, message=str(pending))
                return Result(requeue_after=pending.retry_after)
            except BackendError as error:
                failures = self._delete_failures.get(gateway.id, 0) + 1
                self._delete_failures[gateway.id] = failures
                await self._gateway_status(gateway, message=f"cannot delete the hosts yet: {error}")
                return Result(requeue_after=min(MAX_DELETE_RETRY_SECONDS, 5.0 * 2.0**failures))
        self._delete_failures.pop(gateway.id, None)
        await self._stubs.gateways.FinalizeDelete(registry_pb2.FinalizeRequest(id=gateway.id))
        return Result()

    async def reconcile_service(self, service_id: str) -> Result:
        return await self._local_services.reconcile(service_id)

    def logs(self, project: str, service_name: str, tail: int) -> dict[str, list[str]] | None:
        return self._local_services.logs(project, service_name, tail)


def _shows(status: resources_pb2.GatewayStatus, where: dict[str, object]) -> bool:
    """Whether the registry has the host's address and ports as the backend reports them."""
    return all(
        (list(getattr(status, name)) if isinstance(value, list) else getattr(status, name)) == value
        for name, value in where.items()
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
