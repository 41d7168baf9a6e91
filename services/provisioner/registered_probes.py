"""Probes of the replicas others run (`replica register`), for services with `probes`: the
provisioner probes each ready one from this machine and tells the registry whether they pass
(`SetProbed`); the gateway routes to such a replica only while they do. So a new version registered
beside the old one takes traffic once it passes, and one that fails leaves the endpoints while its
requests in flight finish, as the local runner's replicas do."""

from __future__ import annotations

import functools
import logging

import grpc

from gatehouse import runners
from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import registry_pb2, resources_pb2
from services.provisioner.probing import ReplicaProbes
from services.provisioner.readiness import Streaks
from services.provisioner.registry_calls import ReplicaStubs

log = logging.getLogger(__name__)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _probed(service: resources_pb2.Service, replica: resources_pb2.Replica) -> tuple[object, ...] | None:
    """What a replica is probed at and with; None when the provisioner does not probe it."""
    if not (service.spec.probes and replica.ready and runners.probed_by_provisioner(replica.runner)):
        return None
    probes = tuple(probe.SerializeToString(deterministic=True) for probe in service.spec.probes)
    return (replica.address, probes)


class RegisteredProbes:
    def __init__(self, stubs: ReplicaStubs, mirror: RegistryMirror) -> None:
        self._stubs = stubs
        self._mirror = mirror
        self._probes = ReplicaProbes(self._on_change)
        # replica id -> what it is probed at and with
        self._watched: dict[str, tuple[object, ...]] = {}

    def sync(self) -> None:
        """Probes every replica that should be, with its service's current probes, and no other."""
        wanted: dict[str, tuple[object, ...]] = {}
        for replica in list(self._mirror.replicas.values()):
            service = self._mirror.services.get(replica.service_id)
            key = _probed(service, replica) if service is not None else None
            if key is None or service is None:
                continue
            wanted[replica.id] = key
            if self._watched.get(replica.id) == key:
                continue
            try:
                host, port = _host_port(replica.address)
            except ValueError:
                continue
            self._watched[replica.id] = key
            self._probes.watch(
                replica.id,
                host,
                port,
                service.spec.probes,
                Streaks(ready=replica.probed),
                alive=functools.partial(self._watched.__contains__, replica.id),
                at_once=True,
            )
        for gone in self._watched.keys() - wanted.keys():
            del self._watched[gone]
            self._probes.stop(gone)

    async def _on_change(self, replica_id: str, passing: bool) -> None:
        try:
            await self._stubs.replicas.SetProbed(
                registry_pb2.SetProbedRequest(id=replica_id, passing=passing)
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:  # unregistered meanwhile
                raise

    async def close(self) -> None:
        await self._probes.close()
