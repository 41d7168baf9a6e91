"""Follows the registry and keeps every gateway's snapshot current.

Work per change is proportional to what changed, not to the registry's size: the provider keeps its
own indexes (services by gateway and by name, replicas by service, mapped ports by gateway,
certificates and ACME challenges by gateway) instead of scanning the mirror, and each gateway's
snapshot is updated one service or certificate at a time: the provider hands each gateway's change
(typed IR, ir/changes.py) to the translator and cache (publish.Publisher).
Events that arrive while a batch is being applied are applied together as the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

from gatehouse.client.connection import Stubs
from gatehouse.client.mirror import Change, RegistryMirror, follow
from gatehouse.gateway_resources import HTTP_PORT
from gatehouse.gateway_tls import terminates_tls
from gatehouse.v1 import resources_pb2
from gateway_xds.authz.credentials import CredentialsChanged, CredentialTables
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.incremental import ResourceHook
from gateway_xds.ir.changes import GatewayChange
from gateway_xds.ir.service_route import ServiceRoute
from gateway_xds.ir.tls import TLSSecret
from gateway_xds.provider.agent_tunnels import TunnelIdentity, agent_tunnels
from gateway_xds.provider.build import gateway_listeners, is_catch_all, logical_port, service_route
from gateway_xds.provider.certificates import GatewayCertificates, KeySource, RegistryKeys
from gateway_xds.provider.challenges import ChallengeIndex
from gateway_xds.publish import Publisher

log = logging.getLogger(__name__)

KEY_RETRY_SECONDS = 5.0


class RegistryProvider:
    def __init__(
        self,
        stubs: Stubs | None,
        cache: SnapshotCache,
        hook: ResourceHook | None = None,
        keys: KeySource | None = None,
        after_resync: Callable[[], None] | None = None,
        tunnels: TunnelIdentity | None = None,
    ) -> None:
        """`keys` gives certificates' private keys (the registry's, through `stubs`, by default);
        `after_resync` is called once a whole registry state is published; with `tunnels`, gateways
        take the reverse tunnels of their services' agents."""
        self._stubs = stubs
        self._tunnels = tunnels
        self._after_resync = after_resync
        self._publisher = Publisher(cache, hook)
        # The credential hashes each service's virtual host carries, which its Envoys check.
        self.credentials = CredentialTables()
        self.mirror = RegistryMirror()
        # Where each service is placed, so a moved or removed service leaves its old gateway.
        self._service_gateway: dict[str, str] = {}
        self._services_of: dict[str, set[str]] = {}
        self._replicas_of: dict[str, dict[str, resources_pb2.Replica]] = {}
        self._replica_service: dict[str, str] = {}
        # Per gateway: mapped ports of catch-all services (their count), which decide the listeners.
        self._mapped_ports: dict[str, Counter[int]] = {}
        self._port_of: dict[str, int] = {}
        # Per (gateway, hostname): its services, which ACME answers and certificates are for.
        self._named: dict[tuple[str, str], set[str]] = {}
        self._name_of: dict[str, tuple[str, str]] = {}
        if keys is None and stubs is not None:
            keys = RegistryKeys(stubs)
        self._certificates = GatewayCertificates(keys)
        self._challenges = ChallengeIndex()
        # Per gateway: whether its Envoy ends TLS, and on which port (its certificates depend on it).
        self._tls_of: dict[str, int] = {}
        # The revision of the last change applied: snapshots never claim one whose events they lack.
        self._revision = 0
        self._key_retry: asyncio.Task[None] | None = None
        self.key_retry_seconds = KEY_RETRY_SECONDS

    async def run(self) -> None:
        assert self._stubs is not None
        try:
            await follow(self._stubs.watch, self.mirror, self.on_change)
        finally:
            if self._key_retry is not None:
                self._key_retry.cancel()

    async def on_change(self, change: Change) -> None:
        started = time.perf_counter()
        await self._certificates.fetch_keys(self.mirror, self._certificate_ids(change))
        gateways = self.apply(change)
        if change.resync and self._after_resync is not None:
            self._after_resync()
        self._retry_keys_later()
        if log.isEnabledFor(logging.DEBUG):
            elapsed = (time.perf_counter() - started) * 1000
            log.debug(
                "revision %d: %d gateway(s) published in %.1f ms", change.revision, len(gateways), elapsed
            )

    def apply(self, change: Change) -> set[str]:
        """Bring the snapshots of the gateways `change` touched up to date; returns their ids.

        Certificates are served only once their keys are fetched (on_change does it first)."""
        credentials = CredentialsChanged()
        if change.resync or change.credentials:
            credentials = self.credentials.replace(self.mirror.credentials.values())
        self._revision = change.revision
        if change.resync:
            return self._resync()
        services = set(change.services) | self._opened_by(credentials)
        for replica_id in change.replicas:
            services.update(self._index_replica(replica_id))
        touched: dict[str, set[str]] = {}
        for service_id in services:
            for gateway_id in self._place_service(service_id):
                touched.setdefault(gateway_id, set()).add(service_id)
        for gateway_id in change.gateways:
            # A gateway's own change (status, certificate) may change every service's route.
            touched[gateway_id] = set(self._services_of.get(gateway_id, set()))
        certificate_ids = self._certificate_ids(change)
        for gateway_id in change.gateways:
            self._tls_of[gateway_id] = self._tls_port_of(gateway_id)
        secrets = self._follow_certificates(certificate_ids, touched)
        for gateway_id, hostname in self._challenges.update(self.mirror, change.challenges):
            # Published even when no service has the name: the certificates service waits until the
            # gateway's Envoys have acknowledged the challenge's revision.
            touched.setdefault(gateway_id, set()).update(self._named.get((gateway_id, hostname), ()))
        for gateway_id, service_ids in touched.items():
            self._publish(gateway_id, service_ids, secrets.get(gateway_id, {}))
        return set(touched)

    def _opened_by(self, changed: CredentialsChanged) -> set[str]:
        """The services whose credential tables `changed` touches (and so their virtual hosts)."""
        if not changed:
            return set()
        return {
            service_id
            for service_id, service in self.mirror.services.items()
            if service.spec.auth
            and (changed.everything or service.project in changed.projects or service_id in changed.services)
        }

    # -- certificates ------------------------------------------------------------------------------

    def _certificate_ids(self, change: Change) -> set[str]:
        """Certificates to look at again: those that changed, and all of a gateway whose TLS changed."""
        if change.resync:
            return set(self.mirror.certificates) | self._certificates.known_ids()
        ids = set(change.certificates)
        for gateway_id in change.gateways:
            if self._tls_of.get(gateway_id, 0) != self._tls_port_of(gateway_id):
                ids |= self._certificates.ids_of(gateway_id)
        return ids

    def _tls_port_of(self, gateway_id: str) -> int:
        gateway = self.mirror.gateways.get(gateway_id)
        return gateway.status.https_port if gateway is not None and terminates_tls(gateway) else 0

    def _follow_certificates(
        self, certificate_ids: set[str], touched: dict[str, set[str]]
    ) -> dict[str, dict[str, TLSSecret | None]]:
        """Secrets to put (or remove: None) by gateway; services whose names gained or lost a
        certificate join `touched`."""
        secrets: dict[str, dict[str, TLSSecret | None]] = {}
        for gateway_id, changed in self._certificates.update(self.mirror, certificate_ids).items():
            services = touched.setdefault(gateway_id, set())
            for hostname in changed.hostnames:
                services |= self._services_named(gateway_id, hostname)
            secrets[gateway_id] = changed.secrets
        return secrets

    def _services_named(self, gateway_id: str, name: str) -> set[str]:
        """Services of the gateway a certificate for `name` (maybe `*.parent`) is valid for."""
        if not name.startswith("*."):
            return set(self._named.get((gateway_id, name), ()))
        return {
            service_id
            for service_id in self._services_of.get(gateway_id, ())
            if self._name_of.get(service_id, ("", ""))[1].partition(".")[2] == name[2:]
        }

    def _retry_keys_later(self) -> None:
        if self._certificates.failed and self._key_retry is None:
            self._key_retry = asyncio.get_running_loop().create_task(self._retry_keys())

    async def _retry_keys(self) -> None:
        try:
            await asyncio.sleep(self.key_retry_seconds)
            ids = frozenset(self._certificates.failed)
            await self._certificates.fetch_keys(self.mirror, ids)
            self.apply(Change(revision=self._revision, certificates=ids))
        finally:
            self._key_retry = None
        self._retry_keys_later()

    # -- indexes -----------------------------------------------------------------------------------

    def _index_replica(self, replica_id: str) -> set[str]:
        touched: set[str] = set()
        previous = self._replica_service.pop(replica_id, None)
        if previous is not None:
            self._replicas_of.get(previous, {}).pop(replica_id, None)
            touched.add(previous)
        replica = self.mirror.replicas.get(replica_id)
        if replica is not None:
            self._replica_service[replica_id] = replica.service_id
            self._replicas_of.setdefault(replica.service_id, {})[replica_id] = replica
            touched.add(replica.service_id)
        return touched

    def _place_service(self, service_id: str) -> set[str]:
        """Move the service in the indexes; returns the gateways it leaves or is on."""
        touched: set[str] = set()
        before = self._service_gateway.pop(service_id, None)
        if before is not None:
            self._services_of.get(before, set()).discard(service_id)
            self._unmap_port(before, service_id)
            touched.add(before)
        name = self._name_of.pop(service_id, None)
        if name is not None:
            self._named[name].discard(service_id)
            if not self._named[name]:
                del self._named[name]
        service = self.mirror.services.get(service_id)
        if service is None or not service.spec.gateway_id:
            return touched
        gateway_id = service.spec.gateway_id
        self._service_gateway[service_id] = gateway_id
        self._services_of.setdefault(gateway_id, set()).add(service_id)
        if service.spec.hostname:
            name = self._name_of[service_id] = (gateway_id, service.spec.hostname.lower())
            self._named.setdefault(name, set()).add(service_id)
        port = logical_port(service)
        if is_catch_all(service) and port is not None:
            self._mapped_ports.setdefault(gateway_id, Counter())[port] += 1
            self._port_of[service_id] = port
        touched.add(gateway_id)
        return touched

    def _unmap_port(self, gateway_id: str, service_id: str) -> None:
        port = self._port_of.pop(service_id, None)
        ports = self._mapped_ports.get(gateway_id)
        if port is None or ports is None:
            return
        ports[port] -= 1
        if ports[port] <= 0:
            del ports[port]

    def _resync(self) -> set[str]:
        for index in (self._service_gateway, self._services_of, self._replicas_of, self._replica_service):
            index.clear()
        self._mapped_ports.clear()
        self._port_of.clear()
        self._named.clear()
        self._name_of.clear()
        for replica_id in self.mirror.replicas:
            self._index_replica(replica_id)
        for service_id in self.mirror.services:
            self._place_service(service_id)
        gateways = set(self.mirror.gateways) | self._publisher.gateway_ids()
        self._tls_of = {gateway_id: self._tls_port_of(gateway_id) for gateway_id in gateways}
        secrets = self._follow_certificates(
            set(self.mirror.certificates) | self._certificates.known_ids(), {}
        )
        self._challenges.clear()
        self._challenges.update(self.mirror, self.mirror.challenges)
        for gateway_id in gateways:
            services = self._publisher.service_keys(gateway_id) | self._services_of.get(gateway_id, set())
            self._publish(gateway_id, services, secrets.get(gateway_id, {}))
        return gateways

    # -- publishing --------------------------------------------------------------------------------

    def _publish(
        self, gateway_id: str, service_ids: set[str], secrets: Mapping[str, TLSSecret | None]
    ) -> None:
        """Re-derive the listeners, the given services and secrets of the gateway, and hand them to
        the translator."""
        gateway = self.mirror.gateways.get(gateway_id)
        if gateway is None:
            self._publisher.remove(gateway_id)
            return
        if not self._publisher.has(gateway_id):
            service_ids = service_ids | self._services_of.get(gateway_id, set())
            secrets = {c.secret.name: c.secret for c in self._certificates.served(gateway_id).values()}
        ports = self._mapped_ports.get(gateway_id, Counter())
        tls = self._certificates.tls_port(gateway)
        tunnels = agent_tunnels(gateway, self._tunnels)
        routes: dict[str, ServiceRoute | None] = {}
        for service_id in service_ids:
            service = self.mirror.services.get(service_id)
            route = None
            if service is not None and service.spec.gateway_id == gateway_id:
                hostname = service.spec.hostname
                route = service_route(
                    gateway,
                    service,
                    self._replicas_of.get(service_id, {}).values(),
                    tls_ready=self._certificates.covers(gateway_id, hostname),
                    challenges=self._challenges.answers(gateway_id, hostname),
                    takes_tunnels=tunnels is not None,
                    credentials=self.credentials,
                )
            routes[service_id] = route
        change = GatewayChange(
            gateway_id,
            gateway.name,
            listeners=tuple(gateway_listeners(gateway, ports, ports[HTTP_PORT] > 0, tls)),
            agent_tunnels=tunnels,
            services=routes,
            secrets=secrets,
        )
        self._publisher.apply(change, self._revision)
