"""Every REPORT_SECONDS, each service's counters (summed over its gateway's Envoys) go to the
registry, which keeps the last minutes for `gatehouse service stats`."""

from __future__ import annotations

import asyncio
import logging
import os

import grpc

from gatehouse.client.connection import Stubs
from gatehouse.client.mirror import RegistryMirror
from gatehouse.metrics import CODE_CLASSES
from gatehouse.v1 import registry_pb2
from gateway_xds.observe.envoy_stats import EnvoyStats, service_totals
from gateway_xds.provider.build import backend_name

log = logging.getLogger(__name__)

REPORT_SECONDS = 10.0
# Tests shorten it.
REPORT_SECONDS_ENV = "GATEHOUSE_SERVICE_STATS_SECONDS"


def report_seconds() -> float:
    raw = os.environ.get(REPORT_SECONDS_ENV, "")
    if not raw:
        return REPORT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0.1 <= seconds <= 3600:
        raise SystemExit(f"error: {REPORT_SECONDS_ENV}={raw!r} is not a number of seconds from 0.1 to 3600")
    return seconds


def counters(
    mirror: RegistryMirror, envoy_stats: EnvoyStats
) -> dict[str, list[registry_pb2.ServiceCounters]]:
    """Gateway id -> its services' counters, for the services some Envoy reported."""
    by_gateway: dict[str, list[registry_pb2.ServiceCounters]] = {}
    reports = {
        gateway_id: list(envoy_stats.of_gateway(gateway_id)) for gateway_id in envoy_stats.gateway_ids()
    }
    for service in mirror.services.values():
        gateway_id = service.spec.gateway_id
        if gateway_id not in reports:
            continue
        totals = service_totals(reports[gateway_id], backend_name(service))
        if not totals.envoys:
            continue
        sample = registry_pb2.ServiceCounters(
            service_id=service.id,
            requests_by_class=[totals.requests[code_class] for code_class in CODE_CLASSES],
            active_connections=totals.active_connections,
            ready_replicas=service.status.ready_replicas,
        )
        if totals.latency is not None:
            sample.latency_bounds_ms.extend(totals.latency.bounds)
            sample.latency_counts.extend(totals.latency.counts)
        by_gateway.setdefault(gateway_id, []).append(sample)
    return by_gateway


async def report_stats(stubs: Stubs, mirror: RegistryMirror, envoy_stats: EnvoyStats) -> None:
    seconds = report_seconds()
    while True:
        await asyncio.sleep(seconds)
        for gateway_id, services in counters(mirror, envoy_stats).items():
            request = registry_pb2.ReportServiceStatsRequest(gateway_id=gateway_id, services=services)
            try:
                await stubs.services.ReportStats(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                log.warning("could not report service stats of %s: %s", gateway_id, error.details())
