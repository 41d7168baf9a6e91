"""The gateway_xds process: registry → IR → snapshots → ADS to every Envoy."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc

from gatehouse.client.connection import Stubs
from gatehouse.leadership import Leadership
from gateway_xds.authz.server import wake_service
from gateway_xds.autoscale.autoscaler import Autoscaler
from gateway_xds.autoscale.concurrency import InFlight
from gateway_xds.autoscale.metrics_sink import MetricsSink
from gateway_xds.autoscale.rates import RequestRates
from gateway_xds.autoscale.redis_rates import RedisRates
from gateway_xds.autoscale.wake import Waker
from gateway_xds.autoscale.wake_requests import LocalWakeRequests, RedisWakeRequests, WakeRequests
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.envoy_sync import EnvoySync
from gateway_xds.incremental import ResourceHook
from gateway_xds.memory import freeze_long_lived
from gateway_xds.observe.access_logs import AccessLogOutbox, access_log_service, outbox_from_env
from gateway_xds.observe.collector import XdsCollector
from gateway_xds.observe.envoy_stats import EnvoyStats
from gateway_xds.observe.log_sampling import LogSampling, sampling_from_env
from gateway_xds.observe.runtime_service import runtime_service
from gateway_xds.observe.shared_sampling import RedisSampling
from gateway_xds.observe.stats_reporter import report_stats
from gateway_xds.observe.xds import XdsObserver
from gateway_xds.provider.agent_tunnels import TunnelIdentity
from gateway_xds.provider.envoy_reports import RegistryReporter
from gateway_xds.provider.registry import RegistryProvider
from gateway_xds.ratelimit.buckets import BucketStore, LocalBuckets, SharedBuckets
from gateway_xds.ratelimit.redis_buckets import RedisBuckets
from gateway_xds.ratelimit.server import rate_limit_service
from gateway_xds.server.peer import PeerCertificateAuthorizer
from gateway_xds.server.server import ExtraService, XdsServer, build_xds_server
from gateway_xds.server.throttle import DEFAULT_WINDOW_SECONDS
from gateway_xds.server.watcher import NodeAuthorizer, NodeIdAuthorizer
from gateway_xds.shared.acks import SharedAcks
from gateway_xds.shared.redis import SharedRedis

# The lease under which one copy at a time scales services.
AUTOSCALER_ROLE = "autoscaler"


@dataclass
class XdsApp:
    server: XdsServer
    provider: RegistryProvider
    reporter: RegistryReporter
    cache: SnapshotCache
    autoscaler: Autoscaler
    # Its series for the metrics endpoint.
    collector: XdsCollector
    # The Envoys' access logs, on their way to the registry.
    access_logs: AccessLogOutbox
    # The share of successes each Envoy logs, adapted to load.
    log_sampling: LogSampling
    envoy_stats: EnvoyStats
    stubs: Stubs
    # Whether this copy's autoscaler is the one that scales (the "autoscaler" lease).
    leadership: Leadership
    shared: SharedRedis | None = None
    acks: SharedAcks | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @classmethod
    def build(
        cls,
        stubs: Stubs,
        address: str,
        *,
        hook: ResourceHook | None = None,
        push_window: float = DEFAULT_WINDOW_SECONDS,
        credentials: grpc.ServerCredentials | None = None,
        own_process: bool = False,
        tunnels: TunnelIdentity | None = None,
        shared: SharedRedis | None = None,
    ) -> XdsApp:
        """`hook` rewrites every translated resource: tests use it to make Envoy reject one.

        With `credentials` (TLS requiring a client certificate) a node is served only the resources of
        the gateway its certificate names; without, the node id is trusted (plain text).
        `own_process`: the process is a server's, so its memory may be managed for the long run
        (memory.freeze_long_lived after each resync), which an embedding test process would not want.
        With `tunnels`, every gateway takes the reverse tunnels of its services' agents.
        With `shared` (Redis), what copies must agree on lives there: the shared rate limits, the
        Envoys' request counters and requests to wake a service (gateway_xds/shared/redis.py).
        """
        cache = SnapshotCache()
        reporter = RegistryReporter(stubs)
        acks = SharedAcks(shared, reporter) if shared is not None else None
        reporter.others = acks
        observer = XdsObserver(acks if acks is not None else reporter)
        cache.on_publish = observer.published
        sync = EnvoySync(observer)
        provider = RegistryProvider(
            stubs,
            cache,
            hook,
            after_resync=freeze_long_lived if own_process else None,
            tunnels=tunnels,
        )
        rates = RequestRates() if shared is None else RedisRates(shared)
        # Requests in flight are read from this copy's Envoys only (rates are shared).
        in_flight = InFlight()
        wakes: WakeRequests = LocalWakeRequests() if shared is None else RedisWakeRequests(shared)
        buckets: BucketStore = LocalBuckets(SharedBuckets()) if shared is None else RedisBuckets(shared)
        autoscaler = Autoscaler(stubs, provider.mirror, rates, in_flight, wakes)
        waker = Waker(provider.mirror, sync, autoscaler, fleet=acks)
        envoy_stats = EnvoyStats()
        access_logs = outbox_from_env()
        sampling = sampling_from_env(RedisSampling(shared) if shared is not None else None)
        sink = MetricsSink(rates, in_flight, envoy_stats)
        # Envoys ask here for shared rate limits and wake-ups, push their stats (OTLP), for autoscaling
        # and the metrics endpoint, stream their access logs and take the share of them to log.
        metrics = ExtraService(
            metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
            lambda s: metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(sink, s),
        )
        try:
            authorizer: NodeAuthorizer = (
                NodeIdAuthorizer() if credentials is None else PeerCertificateAuthorizer()
            )
            server = build_xds_server(
                cache,
                authorizer,
                sync,
                address,
                credentials=credentials,
                push_window=push_window,
                services=(
                    wake_service(waker),
                    rate_limit_service(buckets),
                    metrics,
                    access_log_service(access_logs, sampling),
                    runtime_service(sampling),
                ),
            )
        except RuntimeError:
            raise SystemExit(
                f"error: cannot listen for Envoys on {address}: the address is in use "
                "(set GATEHOUSE_XDS_PORT)"
            ) from None
        collector = XdsCollector(
            provider.mirror,
            envoy_stats,
            observer,
            server.stats,
            access_logs.answered,
            autoscaler.decisions,
            sampling,
        )
        return cls(
            server=server,
            provider=provider,
            reporter=reporter,
            cache=cache,
            autoscaler=autoscaler,
            collector=collector,
            access_logs=access_logs,
            log_sampling=sampling,
            envoy_stats=envoy_stats,
            stubs=stubs,
            leadership=Leadership(stubs, AUTOSCALER_ROLE),
            shared=shared,
            acks=acks,
        )

    async def run(self) -> None:
        await self.server.start()
        tasks = [
            self.provider.run(),
            self.reporter.run(),
            self.leadership.run(self.autoscaler.run),
            self.access_logs.run(self.stubs),
            self.log_sampling.run(),
            report_stats(self.stubs, self.provider.mirror, self.envoy_stats),
        ]
        if self.acks is not None:
            tasks.append(self.acks.run())
        try:
            await asyncio.gather(*tasks)
        finally:
            await self.server.stop(grace=1.0)
            if self.acks is not None:
                await self.acks.close()
            if self.shared is not None:
                await self.shared.close()
