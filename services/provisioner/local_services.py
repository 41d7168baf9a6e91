"""The local runner's services: each service with `commands` reconciled to replica processes on
this machine, registered with the registry while they answer (and pass their probes); a changed spec
rolled out beside the old replicas (as a canary, with `canary`), or rolled back.

Level-triggered like the rest of the provisioner: each pass re-reads the service from the mirror.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from gatehouse import rollouts, runners
from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import registry_pb2, resources_pb2
from services.common.workqueue import Result
from services.provisioner.probing import ReplicaProbes
from services.provisioner.readiness import Streaks, interval, probe_round
from services.provisioner.registry_calls import ServiceStubs
from services.provisioner.runner import LocalReplica, LocalRunner, ReplicaFailed, ReplicaGone, spec_hash

log = logging.getLogger(__name__)

REPLICA_RECHECK_SECONDS = 5.0
MAX_RETRY_SECONDS = 60.0
# Seconds a replica out of the endpoints runs on before it stops (`GATEHOUSE_REPLICA_DRAIN`).
DRAIN_SECONDS = 5.0


class LocalServices:
    def __init__(
        self,
        stubs: ServiceStubs,
        mirror: RegistryMirror,
        runner: LocalRunner,
        requeue: Callable[[str], None],
        drain: float = DRAIN_SECONDS,
    ) -> None:
        """`requeue(service_id)` asks for another pass of a service (a replica's probes turned)."""
        self._stubs = stubs
        self.mirror = mirror
        self._runner = runner
        self._requeue = requeue
        self._drain = drain
        self._failures: dict[str, int] = {}
        # Per service: the generation that failed, and when its replicas may be started again.
        self._backoff: dict[str, tuple[int, float]] = {}
        # Per service: the rollout this provisioner last wrote.
        self._rollouts: dict[str, resources_pb2.Rollout] = {}
        self._probes = ReplicaProbes(self._on_probe_change)

    async def close(self) -> None:
        await self._probes.close()

    async def _service_status(
        self,
        service: resources_pb2.Service,
        state: resources_pb2.ServiceState,
        message: str = "",
        rollout: resources_pb2.Rollout | None = None,
    ) -> None:
        """Writes the runner's view of the service; the rollout's stays as last written unless given
        (this provisioner's own record first: the mirror's copy may not show its last write yet)."""
        if rollout is not None:
            self._rollouts[service.id] = resources_pb2.Rollout()
            self._rollouts[service.id].CopyFrom(rollout)
        kept = self._rollout(service)
        written = (service.status.state, service.status.message, service.status.observed_generation)
        if written == (state, message, service.generation) and service.status.rollout == kept:
            return
        status = resources_pb2.ServiceStatus(
            state=state, message=message, observed_generation=service.generation, rollout=kept
        )
        updated = await self._stubs.services.UpdateStatus(
            registry_pb2.UpdateServiceStatusRequest(id=service.id, status=status)
        )
        # The next write in this pass compares with what was written, not with the feed's copy.
        service.status.CopyFrom(updated.status)

    def _rollout(self, service: resources_pb2.Service) -> resources_pb2.Rollout:
        """A copy of the service's last rollout: as this provisioner wrote it, unless the registry's is
        further on (a verdict of `service promote|abort`)."""
        written = self._rollouts.get(service.id)
        registry = service.status.rollout
        latest = resources_pb2.Rollout()
        if written is not None and not rollouts.later(
            (registry.generation, registry.state), (written.generation, written.state)
        ):
            latest.CopyFrom(written)
        else:
            latest.CopyFrom(registry)
        return latest

    async def _register(
        self, service: resources_pb2.Service, replica: LocalReplica, ready: bool, version: str = ""
    ) -> None:
        address = await self._runner.address(replica, service.spec.app_port)
        version = version or self._runner.version(replica) or ""
        known = self.mirror.replicas.get(replica.id)
        if known is not None and (known.address, known.ready, known.version) == (address, ready, version):
            return
        await self._put(service, replica.id, address, ready, version)

    async def _put(
        self, service: resources_pb2.Service, replica_id: str, address: str, ready: bool, version: str
    ) -> None:
        request = registry_pb2.RegisterReplicaRequest(
            project=service.project,
            service=service.name,
            id=replica_id,
            address=address,
            ready=ready,
            runner=runners.LOCAL,
            version=version,
        )
        await self._stubs.replicas.Register(request)

    async def _unregister(self, replica_id: str) -> None:
        self._probes.stop(replica_id)
        if replica_id in self.mirror.replicas:
            await self._stubs.replicas.Unregister(registry_pb2.UnregisterReplicaRequest(id=replica_id))

    async def _on_probe_change(self, replica_id: str, ready: bool) -> None:
        """A running replica's probes turned: in or out of the endpoints at once."""
        known = self.mirror.replicas.get(replica_id)
        service = self.mirror.services.get(known.service_id) if known is not None else None
        if known is None or service is None or known.ready == ready:
            return
        await self._put(service, replica_id, known.address, ready, known.version)
        self._requeue(service.id)

    async def _takes_traffic(self, service: resources_pb2.Service, replica: LocalReplica) -> bool:
        """A running replica of the current spec: ready, unless its probes now fail."""
        if not service.spec.probes:
            return True
        if not self._probes.watching(replica.id):
            # Found running (this provisioner restarted): as it was registered, until probed again.
            known = self.mirror.replicas.get(replica.id)
            await self._watch(service, replica, Streaks(ready=known is not None and known.ready))
        return self._probes.ready(replica.id)

    async def _probe_target(self, service: resources_pb2.Service, replica: LocalReplica) -> tuple[str, int]:
        host, _, port = (await self._runner.address(replica, service.spec.app_port)).rpartition(":")
        return host, int(port)

    async def _watch(self, service: resources_pb2.Service, replica: LocalReplica, streaks: Streaks) -> None:
        host, port = await self._probe_target(service, replica)
        self._probes.watch(
            replica.id, host, port, service.spec.probes, streaks, alive=replica.process.running
        )

    async def _start_ready(
        self,
        service: resources_pb2.Service,
        run: resources_pb2.Service,
        replica: LocalReplica,
        until_probed: bool = True,
    ) -> None:
        """Starts the replica and returns once it answers on its port and, `until_probed`, passes
        its probes (`ready_after` in a row of each) within the runner's ready timeout; ReplicaFailed
        if not. Without `until_probed` its probes go on in the background, from not ready."""
        service_id, generation = service.id, service.generation

        def wanted() -> bool:
            current = self.mirror.services.get(service_id)
            return current is not None and current.generation == generation

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._runner.ready_timeout
        await self._runner.start(replica, run)
        await self._runner.wait_ready(replica, service.spec.app_port, wanted)
        if not service.spec.probes:
            return
        if not until_probed:
            await self._watch(service, replica, Streaks())
            return
        host, port = await self._probe_target(service, replica)
        streaks = Streaks()
        probes = service.spec.probes
        while not await probe_round(host, port, probes, streaks):
            if not wanted():
                raise ReplicaGone(replica.id)
            if not replica.process.running():
                raise ReplicaFailed(self._runner.exit_reason(replica))
            if loop.time() + interval(probes) > deadline:
                raise ReplicaFailed(
                    f"replica {replica.index} did not pass its probes in "
                    f"{self._runner.ready_timeout:.0f}s: {streaks.reason or 'not yet ready_after'}"
                )
            await asyncio.sleep(interval(probes))
        await self._watch(service, replica, streaks)

    async def reconcile(self, service_id: str) -> Result:
        service = self.mirror.services.get(service_id)
        if service is None:
            for index in self._runner.indices(service_id):
                self._probes.stop(self._runner.replica(service_id, index).id)
            await self._runner.stop_service(service_id)
            self._rollouts.pop(service_id, None)
            self._failures.pop(service_id, None)
            self._backoff.pop(service_id, None)
            return Result()
        if not service.spec.commands:
            return Result()
        try:
            run = await self._service_run(service)
        except grpc.aio.AioRpcError as refused:
            if refused.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            # The registry will not give this run its environment (too large with its secrets).
            await self._service_status(service, resources_pb2.SERVICE_STATE_FAILED, refused.details() or "")
            return Result(requeue_after=MAX_RETRY_SECONDS)
        target = spec_hash(run)
        old = [
            self._runner.replica(service_id, index)
            for index in self._runner.indices(service_id)
            if self._runner.version(self._runner.replica(service_id, index)) not in (None, target)
        ]
        live_old = [replica for replica in old if replica.process.running()]
        if live_old:
            return await self._roll_out(service, run, live_old)
        for replica in old:
            await self._unregister(replica.id)
            await self._runner.stop(replica)
        return await self._keep_running(service, run)

    def _slots(self, service: resources_pb2.Service, desired: int) -> list[int]:
        """The indices of the service's replicas: those it has, then the lowest free ones."""
        slots = self._runner.indices(service.id)
        free = (index for index in range(len(slots) + desired) if index not in slots)
        while len(slots) < desired:
            slots.append(next(free))
        return sorted(slots)

    async def _keep_running(self, service: resources_pb2.Service, run: resources_pb2.Service) -> Result:
        """The replicas of the current spec: as many as desired, each restarted when it exits (with
        a backoff), each in the endpoints while it answers (and passes its probes)."""
        service_id = service.id
        # The autoscaler's count within `replicas: min..max`, else the configured one.
        desired = service.status.desired_replicas
        slots = self._slots(service, desired)
        # Scaled down: out of the endpoints, drained, then stopped.
        await self._retire_all([self._runner.replica(service_id, index) for index in slots[desired:]])
        slots = slots[:desired]
        replicas = [self._runner.replica(service_id, index) for index in slots]
        current = [self._runner.is_current(replica, run) for replica in replicas]
        held = self._backoff.get(service_id)
        if held is not None and held[0] != service.generation:
            # A changed spec is tried at once, with a backoff of its own.
            self._failures.pop(service_id, None)
            self._backoff.pop(service_id, None)
        elif held is not None and not all(current):
            # Status writes wake this reconciler too: a restart still waits out its backoff.
            wait = held[1] - asyncio.get_running_loop().time()
            if wait > 0:
                return Result(requeue_after=wait)
        started = False
        for position, replica in enumerate(replicas):
            if current[position]:
                await self._register(service, replica, ready=await self._takes_traffic(service, replica))
                continue
            serving = sum(current[:position]) + sum(current[position + 1 :])
            if replica.spec_file.exists() and not replica.process.running():
                # It was started, and exited since: a crash counts as a failed start.
                return await self._replica_failed(
                    service, replica, self._runner.exit_reason(replica), serving
                )
            if replica.id in self.mirror.replicas:
                await self._register(service, replica, ready=False)
            await replica.process.stop()
            if not serving and service_id not in self._failures:
                # After a failure its reason stays shown until a replica is ready again.
                await self._service_status(service, resources_pb2.SERVICE_STATE_PROVISIONING)
            try:
                # Probes need not pass here: a replica that answers takes traffic once they do.
                await self._start_ready(service, run, replica, until_probed=False)
            except ReplicaGone:
                await self._unregister(replica.id)
                await replica.process.stop()
                return Result()
            except ReplicaFailed as error:
                return await self._replica_failed(service, replica, str(error), serving)
            await self._register(service, replica, ready=self._probes_pass(service, replica))
            current[position] = started = True
        if not started:
            # A pass with nothing to restart: the service has been healthy since the last one.
            self._failures.pop(service_id, None)
            self._backoff.pop(service_id, None)
        unready = [replica for replica in replicas if not self._probes_pass(service, replica)]
        if service.spec.probes and len(unready) == len(replicas) and replicas:
            reason = self._probes.reason(unready[0].id)
            await self._service_status(
                service, resources_pb2.SERVICE_STATE_PROVISIONING, f"no replica passes its probes: {reason}"
            )
        else:
            await self._service_status(service, resources_pb2.SERVICE_STATE_RUNNING)
        pause = interval(service.spec.probes) if service.spec.probes else REPLICA_RECHECK_SECONDS
        return Result(requeue_after=min(REPLICA_RECHECK_SECONDS, pause))

    def _probes_pass(self, service: resources_pb2.Service, replica: LocalReplica) -> bool:
        return not service.spec.probes or self._probes.ready(replica.id)

    async def _roll_out(
        self, service: resources_pb2.Service, run: resources_pb2.Service, old: list[LocalReplica]
    ) -> Result:
        """Replaces `old` (replicas of an earlier spec, serving) with replicas of `run`, one more
        than desired at a time: each new one starts, answers and passes its probes, takes traffic,
        and only then does an old one leave the endpoints, drain and stop. A new replica that never
        gets ready rolls the change back: the new replicas stop, the old ones serve throughout.

        With `canary`, the old replicas stay: once every new one is ready, the new version takes
        the canary's share of the requests until `service promote` (the old ones then drain and
        stop) or `service abort` (the new ones do)."""
        target = spec_hash(run)
        rollout = self._rollout(service)
        if rollout.generation == service.generation:
            if rollout.state in (rollouts.FAILED, rollouts.CANARY):
                # Rolled back, or a canary awaiting its verdict: both versions' replicas stay as they are.
                return Result(requeue_after=REPLICA_RECHECK_SECONDS)
            if rollout.state == rollouts.PROMOTING:
                await self._retire_all(old)
                return await self._completed(service, rollout, len(self._of_version(service, target)))
            if rollout.state == rollouts.ABORTING:
                await self._retire_all(self._of_version(service, target))
                rollout.state = rollouts.FAILED
                rollout.message = "aborted: the previous version serves every request"
                await self._service_status(service, resources_pb2.SERVICE_STATE_RUNNING, "", rollout)
                return Result(requeue_after=REPLICA_RECHECK_SECONDS)
        desired = max(1, service.status.desired_replicas)
        canary = service.spec.canary
        progress = resources_pb2.Rollout(
            generation=service.generation,
            state=rollouts.PROGRESSING,
            version=target,
            canary_weight=canary.weight,
            canary_header=canary.header,
        )
        is_canary = bool(canary.weight or canary.header)
        bounds = service.spec.rollout
        surge, unavailable = (bounds.max_surge, bounds.max_unavailable) if bounds.ByteSize() else (1, 0)
        if not surge and not unavailable:
            surge = 1
        while True:
            new = self._of_version(service, target)
            ready = [replica for replica in new if self._runner.is_current(replica, run)]
            if len(ready) >= desired and (not old or is_canary):
                break
            progress.updated_replicas, progress.old_replicas = len(ready), len(old)
            progress.message = f"{len(ready)} of {desired} new replicas ready, {len(old)} old serving"
            await self._service_status(service, resources_pb2.SERVICE_STATE_RUNNING, "", progress)
            # Old replicas go while those left and the new ready ones keep the service within
            # `max_unavailable` of the desired count (a canary's stay until its verdict).
            leaving = []
            while not is_canary and old and len(ready) + len(old) - 1 >= desired - unavailable:
                leaving.append(old.pop())
            await self._retire_all(leaving)
            # New ones start while the service stays within `max_surge` above it (a canary's beside
            # every old one, `max_surge` at a time).
            room = surge if is_canary else desired + surge - len(ready) - len(old)
            starting = min(desired - len(ready), room)
            if starting <= 0:
                if leaving:
                    continue
                return Result(requeue_after=REPLICA_RECHECK_SECONDS)  # nothing may move: look again
            try:
                failure = await self._start_new(service, run, new, ready, starting)
            except ReplicaGone:
                return Result()  # changed again: the next pass rolls out the newest spec
            if failure is not None:
                return await self._roll_back(service, run, old, failure, progress)
        if not old:
            return await self._completed(service, progress, len(ready))
        progress.state = rollouts.CANARY
        progress.updated_replicas, progress.old_replicas = len(ready), len(old)
        share = f"{canary.weight}% of requests" + (
            f" and those with {canary.header}" if canary.header else ""
        )
        progress.message = f"{share} go to the new version: `gatehouse service promote|abort {service.name}`"
        await self._service_status(service, resources_pb2.SERVICE_STATE_RUNNING, "", progress)
        return Result(requeue_after=REPLICA_RECHECK_SECONDS)

    async def _completed(
        self, service: resources_pb2.Service, progress: resources_pb2.Rollout, serving: int
    ) -> Result:
        progress.state = rollouts.COMPLETE
        progress.updated_replicas, progress.old_replicas = serving, 0
        progress.message = f"{serving} new replicas serving"
        await self._service_status(service, resources_pb2.SERVICE_STATE_RUNNING, "", progress)
        self._failures.pop(service.id, None)
        self._backoff.pop(service.id, None)
        return Result(requeue_after=REPLICA_RECHECK_SECONDS)

    def _of_version(self, service: resources_pb2.Service, version: str) -> list[LocalReplica]:
        replicas = (self._runner.replica(service.id, index) for index in self._runner.indices(service.id))
        return [replica for replica in replicas if self._runner.version(replica) == version]

    async def _start_new(
        self,
        service: resources_pb2.Service,
        run: resources_pb2.Service,
        new: list[LocalReplica],
        ready_new: list[LocalReplica],
        count: int,
    ) -> str | None:
        """`count` more new replicas at once, each taking traffic once ready; else why one is not
        (ReplicaGone when the service changed again meanwhile)."""
        indices = [replica.index for replica in new if replica not in ready_new][:count]
        taken = set(self._runner.indices(service.id))
        free = (index for index in range(len(taken) + count + 1) if index not in taken)
        while len(indices) < count:
            indices.append(next(free))
        replicas = [self._runner.replica(service.id, index) for index in indices]
        outcomes = await asyncio.gather(
            *(self._start_one(service, run, replica) for replica in replicas), return_exceptions=True
        )
        started: list[str | None] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            started.append(outcome)
        return next((outcome for outcome in started if outcome is not None), None)

    async def _start_one(
        self, service: resources_pb2.Service, run: resources_pb2.Service, replica: LocalReplica
    ) -> str | None:
        await replica.process.stop()
        try:
            await self._start_ready(service, run, replica)
        except ReplicaGone:
            await self._runner.stop(replica)
            raise
        except ReplicaFailed as error:
            return str(error)
        await self._register(service, replica, ready=True)
        return None

    async def _retire(self, replica: LocalReplica) -> None:
        """Out of the endpoints first; stopped once the gateway's Envoys let its requests finish."""
        await self._retire_all([replica])

    async def _retire_all(self, replicas: list[LocalReplica]) -> None:
        for replica in replicas:
            await self._unregister(replica.id)
        if replicas:
            await asyncio.sleep(self._drain)
        for replica in replicas:
            await self._runner.stop(replica)

    async def _roll_back(
        self,
        service: resources_pb2.Service,
        run: resources_pb2.Service,
        old: list[LocalReplica],
        reason: str,
        progress: resources_pb2.Rollout,
    ) -> Result:
        for replica in self._of_version(service, spec_hash(run)):
            await self._unregister(replica.id)
            await self._runner.stop(replica)
        progress.state = rollouts.FAILED
        progress.updated_replicas, progress.old_replicas = 0, len(old)
        progress.message = f"rolled back: {reason}"
        log.warning("service %s: generation %d rolled back: %s", service.name, service.generation, reason)
        state = resources_pb2.SERVICE_STATE_RUNNING if old else resources_pb2.SERVICE_STATE_FAILED
        message = f"the new version was rolled back ({reason}); the previous one serves"
        await self._service_status(service, state, message, progress)
        return Result(requeue_after=REPLICA_RECHECK_SECONDS)

    async def _service_run(self, service: resources_pb2.Service) -> resources_pb2.Service:
        """The service with ${{ secrets.X }} in its env and commands resolved by the registry."""
        texts = [*service.spec.env.values(), *service.spec.commands]
        if not any("${{" in text for text in texts):
            return service
        resolved = await self._stubs.secrets.ResolveRun(registry_pb2.ResolveRunRequest(service_id=service.id))
        run = resources_pb2.Service()
        run.CopyFrom(service)
        run.spec.env.clear()
        run.spec.env.update(resolved.env)
        del run.spec.commands[:]
        run.spec.commands.extend(resolved.commands)
        return run

    async def _replica_failed(
        self, service: resources_pb2.Service, replica: LocalReplica, reason: str, serving: int
    ) -> Result:
        """Stops the replica and tries again after a backoff (1 s, doubling to 60 s) with the reason
        on the service: failed when no other replica serves, else running with the reason shown."""
        await self._unregister(replica.id)
        await replica.process.stop()
        replica.spec_file.unlink(missing_ok=True)
        failures = self._failures.get(service.id, 0) + 1
        self._failures[service.id] = failures
        delay = min(MAX_RETRY_SECONDS, 2.0 ** (failures - 1))
        self._backoff[service.id] = (service.generation, asyncio.get_running_loop().time() + delay)
        state = resources_pb2.SERVICE_STATE_RUNNING if serving else resources_pb2.SERVICE_STATE_FAILED
        await self._service_status(service, state, f"{reason} (retrying in {delay:.0f}s)")
        return Result(requeue_after=delay)

    def logs(self, project: str, service_name: str, tail: int) -> dict[str, list[str]] | None:
        for service in self.mirror.services.values():
            if (service.project, service.name) == (project, service_name):
                return self._runner.logs(service.id, tail)
        return None
