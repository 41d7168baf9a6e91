"""Rows to API messages."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime

from google.protobuf import json_format, timestamp_pb2

from gatehouse.v1 import resources_pb2
from services.registry.configurations import GatewayConfig, ServiceConfig
from services.registry.models import EnvoyStatusRow, GatewayRow, ReplicaRow, ServiceRow


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


@functools.lru_cache(maxsize=4096)
def _gateway_spec(spec: str) -> GatewayConfig:
    return GatewayConfig.model_validate(json.loads(spec))


@functools.lru_cache(maxsize=65536)
def _service_spec(spec: str) -> ServiceConfig:
    return ServiceConfig.model_validate(json.loads(spec))


def gateway_config(row: GatewayRow) -> GatewayConfig:
    """The stored spec, validated once per distinct text (configs are frozen, so sharing is safe)."""
    return _gateway_spec(row.spec)


def service_config(row: ServiceRow) -> ServiceConfig:
    return _service_spec(row.spec)


def gateway_status(row: GatewayRow) -> resources_pb2.GatewayStatus:
    return json_format.Parse(row.status, resources_pb2.GatewayStatus())


def service_status(row: ServiceRow) -> resources_pb2.ServiceStatus:
    return json_format.Parse(row.status, resources_pb2.ServiceStatus())


def status_json(status: resources_pb2.GatewayStatus | resources_pb2.ServiceStatus) -> str:
    return json_format.MessageToJson(status, indent=None)


def gateway_message(row: GatewayRow, envoys: list[EnvoyStatusRow] | None = None) -> resources_pb2.Gateway:
    config = gateway_config(row)
    spec = resources_pb2.GatewaySpec(
        backend=config.backend,
        region=config.region,
        domain=config.domain or "",
        default=row.is_default,
        public_ip=config.public_ip,
        instance_type=config.instance_type or "",
        replicas=config.replicas,
        tags=config.tags,
        address=config.address or "",
        replica_networks=config.replica_networks,
    )
    if config.certificate is not None:
        spec.certificate.type = config.certificate.type
        spec.certificate.arn = getattr(config.certificate, "arn", "")
    status = gateway_status(row)
    status.envoys.extend(envoy_status(envoy) for envoy in envoys or ())
    return resources_pb2.Gateway(
        id=row.id,
        project=row.project_id,
        name=row.name,
        spec=spec,
        status=status,
        generation=row.generation,
        resource_version=row.resource_version,
        created_at=timestamp(row.created_at),
    )


def envoy_status(row: EnvoyStatusRow) -> resources_pb2.EnvoyStatus:
    return resources_pb2.EnvoyStatus(
        node_id=row.node_id,
        connected=row.connected,
        acked_revision=row.acked_revision,
        rejected=row.rejected,
        updated_at=timestamp(row.updated_at),
        rejected_resources=[
            resources_pb2.RejectedResource(**resource)
            for resource in json.loads(row.rejected_resources or "[]")
        ],
    )


def service_urls(row: ServiceRow, gateway: GatewayRow | None, https: bool) -> list[str]:
    """Where users reach the service, with the port Envoy really listens on wherever it is not the
    scheme's own (the local backend serves :80 and :443 on 8080 and 8443 when not root)."""
    if gateway is None:
        return []
    status = gateway_status(gateway)
    if row.hostname:
        scheme, port = ("https", status.https_port or 443) if https else ("http", status.http_port or 80)
        return [_url(scheme, row.hostname, port)]
    if not status.hostname or row.gateway_port is None:
        return []
    port = (status.http_port or 80) if row.gateway_port == 80 else row.gateway_port
    return [_url("http", status.hostname, port)]


def _url(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" if port == default else f"{scheme}://{host}:{port}"


def service_message(
    row: ServiceRow, gateway: GatewayRow | None, ready_replicas: int = 0
) -> resources_pb2.Service:
    config = service_config(row)
    https = effective_https(config, gateway)
    spec = resources_pb2.ServiceSpec(
        gateway="" if config.gateway is None else str(config.gateway).lower(),
        gateway_id=row.gateway_id or "",
        gateway_port=row.gateway_port or 0,
        app_port=config.ports[1],
        hostname=row.hostname or "",
        https=str(config.https).lower(),
        auth=config.auth,
        replicas=config.replica_range[0],
        replicas_min=config.replica_range[0],
        replicas_max=config.replica_range[1],
        commands=config.commands,
        env=config.env,
        model=config.model or "",
        rate_limits=[
            resources_pb2.RateLimit(
                prefix=limit.prefix,
                rps=limit.rps,
                burst=limit.burst,
                key=limit.key.type,
                header=getattr(limit.key, "header", ""),
                scope=limit.scope,
            )
            for limit in config.rate_limits
        ],
        probes=[
            resources_pb2.Probe(
                url=probe.url,
                method=probe.method.upper(),
                headers=[resources_pb2.ProbeHeader(name=h.name, value=h.value) for h in probe.headers],
                body=probe.body or "",
                timeout_seconds=int(probe.timeout),
                interval_seconds=int(probe.interval),
                ready_after=probe.ready_after,
                unready_after=probe.unready_after,
                expected_status=probe.expected_status,
                until_ready=probe.until_ready,
            )
            for probe in config.probes
        ],
    )
    spec.rollout.CopyFrom(
        resources_pb2.RolloutBounds(
            max_surge=config.rollout.max_surge, max_unavailable=config.rollout.max_unavailable
        )
    )
    if config.canary is not None:
        spec.canary.CopyFrom(
            resources_pb2.Canary(weight=config.canary.weight, header=config.canary.header or "")
        )
    if config.scaling is not None:
        spec.scaling.CopyFrom(
            resources_pb2.Scaling(
                metric=config.scaling.metric,
                target=config.scaling.target,
                window_seconds=int(config.scaling.window),
                scale_up_delay_seconds=int(config.scaling.scale_up_delay),
                scale_down_delay_seconds=int(config.scaling.scale_down_delay),
            )
        )
    status = service_status(row)
    status.ready_replicas = ready_replicas
    status.gateway_name = gateway.name if gateway is not None else ""
    low, high = config.replica_range
    desired = row.desired_replicas if row.desired_replicas is not None else low
    status.desired_replicas = max(low, min(high, desired))
    del status.urls[:]
    status.urls.extend(service_urls(row, gateway, https))
    return resources_pb2.Service(
        id=row.id,
        project=row.project_id,
        name=row.name,
        spec=spec,
        status=status,
        generation=row.generation,
        resource_version=row.resource_version,
        created_at=timestamp(row.created_at),
    )


def effective_https(config: ServiceConfig, gateway: GatewayRow | None) -> bool:
    """HTTPS applies to domain mode on a gateway with a certificate; port mode is plain HTTP."""
    if gateway is None or config.maps_port:
        return False
    gateway_cfg = gateway_config(gateway)
    if gateway_cfg.domain is None or gateway_cfg.certificate is None:
        return False
    return config.https is not False


def replica_message(row: ReplicaRow) -> resources_pb2.Replica:
    return resources_pb2.Replica(
        id=row.id,
        project=row.project_id,
        service_id=row.service_id,
        address=row.address,
        ready=row.ready,
        runner=row.runner,
        version=row.version,
        probed=row.probed,
        resource_version=row.resource_version,
        heartbeat_at=timestamp(row.heartbeat_at),
    )
