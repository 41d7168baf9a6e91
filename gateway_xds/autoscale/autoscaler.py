"""Sets each scaling service's replica count in the registry from its load: its request rate, or its
requests in flight (`metric: concurrency`), counting a canary's cluster with the service's.

`run` is the leader's work (one copy at a time, under the "autoscaler" lease, see app.py): it alone
scales. Any copy that holds a request for a service with no replica asks it to wake the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter

import grpc

from gatehouse import scaling
from gatehouse.client.connection import Stubs
from gatehouse.client.mirror import RegistryMirror
from gatehouse.gateway_resources import canary_backend_name
from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.autoscale.concurrency import InFlight
from gateway_xds.autoscale.decision import ScalingPolicy, ScalingState, decide, wake
from gateway_xds.autoscale.rates import RequestRates
from gateway_xds.autoscale.wake_requests import LocalWakeRequests, WakeRequests
from gateway_xds.provider.build import backend_name
from gateway_xds.shared.redis import SharedStateUnavailable

LOOK_EVERY_SECONDS = 1.0
# However many requests wait for a service on this copy, it asks the leader at most this often.
ASK_EVERY_SECONDS = 0.5

log = logging.getLogger(__name__)


def policy_of(service: resources_pb2.Service) -> ScalingPolicy | None:
    spec = service.spec
    if spec.scaling.metric not in scaling.METRICS or spec.replicas_min == spec.replicas_max:
        return None
    return ScalingPolicy(
        minimum=spec.replicas_min,
        maximum=spec.replicas_max,
        target=spec.scaling.target,
        scale_up_delay=spec.scaling.scale_up_delay_seconds,
        scale_down_delay=spec.scaling.scale_down_delay_seconds,
    )


class Autoscaler:
    def __init__(
        self,
        stubs: Stubs,
        mirror: RegistryMirror,
        rates: RequestRates,
        in_flight: InFlight | None = None,
        wakes: WakeRequests | None = None,
    ) -> None:
        self._stubs = stubs
        self._mirror = mirror
        self._rates = rates
        self._in_flight = in_flight or InFlight()
        self._wakes: WakeRequests = wakes if wakes is not None else LocalWakeRequests()
        self._states: dict[str, ScalingState] = {}
        self._waking: dict[str, asyncio.Task[None]] = {}
        self._asking: set[asyncio.Task[None]] = set()
        self._asked_at: dict[str, float] = {}
        # (service id, "up" | "down") -> scaling decisions taken, for the metrics endpoint
        self.decisions: Counter[tuple[str, str]] = Counter()

    async def run(self) -> None:
        """Scales while it runs: from the rates each second, and at once for wake requests. Starts
        afresh (a predecessor's timers are not known here)."""
        self._states.clear()
        self._rates.reset()
        await asyncio.gather(self._look_each_second(), self._answer_wakes())

    async def _look_each_second(self) -> None:
        while True:
            await asyncio.sleep(LOOK_EVERY_SECONDS)
            try:
                await self._rates.refresh()
                await self.look(time.monotonic())
            except grpc.aio.AioRpcError as error:
                log.warning("autoscaler: %s", error.details())
            except SharedStateUnavailable:
                pass  # without the rates nothing is decided (warned already)

    async def _answer_wakes(self) -> None:
        while True:
            try:
                await self._wakes.listen()
                while True:
                    for service_id in await self._wakes.asked():
                        service = self._mirror.services.get(service_id)
                        if service is not None:
                            self._wake_now(service)
            except SharedStateUnavailable:
                await asyncio.sleep(LOOK_EVERY_SECONDS)

    async def look(self, now: float) -> None:
        seen = set()
        for service in list(self._mirror.services.values()):
            policy = policy_of(service)
            if policy is None:
                continue
            seen.add(service.id)
            state = self._states.setdefault(service.id, ScalingState(current=service.status.desired_replicas))
            load = self.load(service, now)
            wanted = decide(policy, state, load, now)
            if wanted != service.status.desired_replicas:
                log.info(
                    "service %s/%s: %.2f %s -> %d replicas",
                    service.project, service.name, load, service.spec.scaling.metric, wanted,
                )  # fmt: skip
                await self._scale(service.id, wanted)
        for gone in self._states.keys() - seen:
            del self._states[gone]

    def load(self, service: resources_pb2.Service, now: float) -> float:
        """Requests per second, or in flight, over the scaling window (a canary's included)."""
        window = service.spec.scaling.window_seconds or 60
        backend = backend_name(service)
        clusters = (backend, canary_backend_name(backend))
        if service.spec.scaling.metric == "concurrency":
            return sum(self._in_flight.level(cluster, now, window) for cluster in clusters)
        return sum(self._rates.rate(cluster, now, window) for cluster in clusters)

    def wake(self, service: resources_pb2.Service) -> None:
        """Requests wait on this copy for `service`, which has no replica: asks the leader to scale
        it to one (a holder asks again while it waits: a request lost with a leader is asked anew)."""
        if policy_of(service) is None or service.status.desired_replicas > 0:
            return
        now = time.monotonic()
        if now - self._asked_at.get(service.id, -ASK_EVERY_SECONDS) < ASK_EVERY_SECONDS:
            return
        self._asked_at = {key: at for key, at in self._asked_at.items() if now - at < ASK_EVERY_SECONDS}
        self._asked_at[service.id] = now
        task = asyncio.get_running_loop().create_task(self._ask(service.id))
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _ask(self, service_id: str) -> None:
        with contextlib.suppress(SharedStateUnavailable):  # warned already; the holder asks again
            await self._wakes.ask(service_id)

    def _wake_now(self, service: resources_pb2.Service) -> None:
        """The leader: scale `service` to one now, without waiting for its stats; once per service
        however many requests wait."""
        policy = policy_of(service)
        if policy is None or service.status.desired_replicas > 0 or service.id in self._waking:
            return
        state = self._states.setdefault(service.id, ScalingState(current=0))
        wanted = wake(state, time.monotonic(), service.spec.scaling.window_seconds or 60)
        log.info(
            "service %s/%s: requests are waiting -> %d replica(s)", service.project, service.name, wanted
        )
        task = asyncio.get_running_loop().create_task(self._scale(service.id, wanted))
        self._waking[service.id] = task
        task.add_done_callback(lambda _: self._waking.pop(service.id, None))

    async def _scale(self, service_id: str, replicas: int) -> None:
        service = self._mirror.services.get(service_id)
        if service is not None:
            direction = "up" if replicas > service.status.desired_replicas else "down"
            self.decisions[(service_id, direction)] += 1
        try:
            await self._stubs.services.Scale(
                registry_pb2.ScaleServiceRequest(id=service_id, replicas=replicas)
            )
        except grpc.aio.AioRpcError as error:
            log.warning("autoscaler: %s", error.details())
