"""Backends as EDS clusters fetched over ADS, with passive health checking.

Health: the registry already knows which replicas are ready (the runner's probes and heartbeats)
and only those become endpoints. On top, outlier detection ejects a replica that fails to connect
or answers with gateway errors. Active health checks were left out on purpose: every Envoy would
probe every replica, multiplying probe traffic by the number of gateway hosts.
"""

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from google.protobuf import wrappers_pb2

from gateway_xds.ir.backends import Backend
from gateway_xds.translate.agent_tunnels import agent_tunnel_cluster
from gateway_xds.translate.config_source import ads_config_source, milliseconds

# Envoy's default circuit breakers (1,024 connections/requests per cluster) would turn a popular
# service's long-lived streams into 503s; a gateway relies on the replicas' own limits instead.
CIRCUIT_LIMIT = 100_000


def cluster(backend: Backend) -> cluster_pb2.Cluster:
    if backend.agent_name:
        # Replicas behind NAT: their agents' tunnels are the connections (translate/agent_tunnels.py).
        built = agent_tunnel_cluster(backend)
    else:
        built = cluster_pb2.Cluster(
            name=backend.name,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_config_source()),
            connect_timeout=milliseconds(backend.connect_timeout_ms),
            lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
            outlier_detection=_outlier_detection(),
        )
    built.circuit_breakers.CopyFrom(
        circuit_breaker_pb2.CircuitBreakers(
            thresholds=[
                circuit_breaker_pb2.CircuitBreakers.Thresholds(
                    max_connections=_u32(CIRCUIT_LIMIT),
                    max_pending_requests=_u32(CIRCUIT_LIMIT),
                    max_requests=_u32(CIRCUIT_LIMIT),
                )
            ]
        )
    )
    return built


def _outlier_detection() -> outlier_detection_pb2.OutlierDetection:
    return outlier_detection_pb2.OutlierDetection(
        # Connection failures and timeouts count apart from the application's own 5xx answers,
        # which never eject a replica (a 500 is the application's business).
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=_u32(5),
        enforcing_consecutive_local_origin_failure=_u32(100),
        consecutive_gateway_failure=_u32(5),
        enforcing_consecutive_gateway_failure=_u32(100),
        enforcing_consecutive_5xx=_u32(0),
        enforcing_success_rate=_u32(0),
        interval=milliseconds(5_000),
        base_ejection_time=milliseconds(15_000),
        max_ejection_percent=_u32(50),
    )


def _u32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)
