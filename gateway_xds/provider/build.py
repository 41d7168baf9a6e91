"""Registry objects of one gateway → its IR, one service at a time. Pure: same inputs, same IR."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import replace

from gatehouse import access_logs, gateway_resources, rollouts, runners
from gatehouse.agent_tunnels import agent_name, tunnel_node
from gatehouse.gateway_resources import HTTP_LISTENER, HTTP_PORT, listener_name
from gatehouse.v1 import resources_pb2
from gateway_xds.authz.credentials import CredentialTables
from gateway_xds.ir.agent_tunnels import AgentTunnels
from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener, RouteTable
from gateway_xds.ir.routes import Canary, VirtualHost
from gateway_xds.ir.service_route import ServiceRoute
from gateway_xds.ir.tls import AcmeChallenge, TLSPort
from gateway_xds.provider import policies
from gateway_xds.provider.tls import ServedCertificate, covered, tls_port


def backend_name(service: resources_pb2.Service) -> str:
    """The service's cluster, endpoints and route scope (the rule is in gatehouse/gateway_resources.py,
    where the registry reads Envoy's rejections back by name)."""
    return gateway_resources.backend_name(service.project, service.name)


def logical_port(service: resources_pb2.Service) -> int | None:
    """The gateway port the service is reached on: 80 in domain mode, its mapped port otherwise."""
    if service.spec.hostname:
        return HTTP_PORT
    return service.spec.gateway_port or None


def is_catch_all(service: resources_pb2.Service) -> bool:
    """A port-mapped service answers every host on its port."""
    return not service.spec.hostname and bool(service.spec.gateway_port)


def _endpoint(address: str) -> Endpoint | None:
    host, _, port = address.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return Endpoint(host=host.strip("[]"), port=int(port))
    except ValueError:
        return None


def takes_traffic(service: resources_pb2.Service, replica: resources_pb2.Replica) -> bool:
    """Ready, and for a replica others run of a service with probes, passing them (the provisioner
    probes it)."""
    if not replica.ready:
        return False
    return replica.probed or not service.spec.probes or not runners.probed_by_provisioner(replica.runner)


def _endpoints(replicas: Iterable[resources_pb2.Replica]) -> tuple[Endpoint, ...]:
    found = (_endpoint(replica.address) for replica in replicas if replica.ready)
    return tuple(
        sorted({endpoint for endpoint in found if endpoint is not None}, key=lambda e: (e.host, e.port))
    )


def tunnelled(replicas: Iterable[resources_pb2.Replica]) -> bool:
    """Whether a ready replica is served by an agent over reverse tunnels (gatehouse/agent_tunnels.py)."""
    return any(replica.ready and tunnel_node(replica.address) is not None for replica in replicas)


def https_redirect(gateway: resources_pb2.Gateway, service: resources_pb2.Service, tls_ready: bool) -> bool:
    """Whether plain HTTP to the service is redirected: only once the gateway serves its certificate
    (`tls_ready`; the TLS listener is not there yet), for `https: true|auto` domain services."""
    has_certificate = gateway.spec.HasField("certificate")
    return tls_ready and has_certificate and bool(service.spec.hostname) and service.spec.https != "false"


def service_route(
    gateway: resources_pb2.Gateway,
    service: resources_pb2.Service,
    replicas: Iterable[resources_pb2.Replica],
    tls_ready: bool = False,
    challenges: tuple[AcmeChallenge, ...] = (),
    takes_tunnels: bool = False,
    credentials: CredentialTables | None = None,
) -> ServiceRoute | None:
    """The service's virtual host and backend; None when the gateway does not route it.

    `tls_ready`: a certificate the gateway serves covers the service's name; `challenges`: the ACME
    HTTP-01 answers for its name; `takes_tunnels`: the gateway takes its agents' tunnels, so a
    service with a replica behind an agent is served over them (and only over them); `credentials`:
    what opens which service (none: a service with auth opens to no one)."""
    port = logical_port(service)
    if port is None:
        return None
    name = backend_name(service)
    replicas = [replica for replica in replicas if takes_traffic(service, replica)]
    agents = agent_name(service.id, gateway.id) if takes_tunnels and tunnelled(replicas) else ""
    split = None if agents else canary_split(service, replicas)
    canary: Backend | None = None
    if split is not None:
        replicas, new_replicas, share = split
        canary = Backend(gateway_resources.canary_backend_name(name), _endpoints(new_replicas))
    endpoints = () if agents else _endpoints(replicas)
    domains = (service.spec.hostname.lower(),) if service.spec.hostname else ("*",)
    vhost = VirtualHost(
        name=name,
        domains=domains,
        backend=name,
        https_redirect=https_redirect(gateway, service, tls_ready),
        https_port=gateway.status.https_port or 443,
        acme_challenges=challenges,
        authorization=policies.authorization(service, credentials),
        rate_limits=policies.rate_limits(service),
        cors=policies.cors(service),
        scale_from_zero=policies.scale_from_zero(
            service, bool(endpoints or agents or (canary is not None and canary.endpoints))
        ),
    )
    if canary is not None:
        header = service.status.rollout.canary_header
        vhost = replace(vhost, canary=_canary(canary, endpoints, share, header))
    return ServiceRoute(
        listener_name(port), vhost, Backend(name=name, endpoints=endpoints, agent_name=agents), canary
    )


def canary_split(
    service: resources_pb2.Service, replicas: list[resources_pb2.Replica]
) -> tuple[list[resources_pb2.Replica], list[resources_pb2.Replica], int] | None:
    """While a canary rolls out: the old version's replicas, the new one's (by their `version`) and
    the new one's share of requests; None without a canary."""
    rollout = service.status.rollout
    if not rollout.version or not (rollout.canary_weight or rollout.canary_header):
        return None
    weight = rollouts.canary_weight(rollout.state, rollout.canary_weight)
    if weight is None:
        return None
    new = [replica for replica in replicas if replica.version == rollout.version]
    old = [replica for replica in replicas if replica.version != rollout.version]
    return old, new, weight


def _canary(backend: Backend, stable: tuple[Endpoint, ...], weight: int, header: str) -> Canary:
    """Never a share for a side with no endpoint to take it: a canary not yet ready gets none, an
    old version already gone gives all of it."""
    if not backend.endpoints:
        weight = 0
    elif not stable:
        weight = 100
    return Canary(backend=backend.name, weight=weight, header=header if backend.endpoints else "")


def gateway_listeners(
    gateway: resources_pb2.Gateway,
    mapped_ports: Iterable[int],
    catch_all_on_http: bool,
    tls: TLSPort | None = None,
) -> list[HTTPListener]:
    """The stable :80 listener (with `tls`, its TLS port, when Envoy ends TLS) plus one per mapped port
    (seed 004), once the provisioner has reported where the host listens.

    In domain mode the :80 listener has one scope per service (RouteTable.PER_HOST). A gateway with
    no domain (or with a port-mapped service on :80, which must answer every host) keeps one route
    configuration there instead.
    """
    address, http_port = gateway.status.listen_address, gateway.status.http_port
    if not address or not http_port:
        return []
    per_host = bool(gateway.spec.domain) and not catch_all_on_http
    listeners = [
        HTTPListener(
            HTTP_LISTENER,
            address,
            http_port,
            route_table=RouteTable.PER_HOST if per_host else RouteTable.SINGLE,
            tls=tls,
            authorization_cluster=policies.AUTHORIZATION_CLUSTER,
            access_log_percent=access_logs.configured_percent(),
        )
    ]
    for port in sorted(set(mapped_ports) - {HTTP_PORT}):
        listeners.append(
            HTTPListener(
                listener_name(port),
                address,
                port,
                authorization_cluster=policies.AUTHORIZATION_CLUSTER,
                access_log_percent=access_logs.configured_percent(),
            )
        )
    return listeners


def gateway_ir(
    gateway: resources_pb2.Gateway,
    services: Iterable[resources_pb2.Service],
    replicas: Mapping[str, Iterable[resources_pb2.Replica]],
    certificates: Iterable[ServedCertificate] = (),
    challenges: Iterable[resources_pb2.AcmeChallenge] = (),
    agent_tunnels: AgentTunnels | None = None,
    credentials: CredentialTables | None = None,
) -> GatewayIR:
    """The whole IR of a gateway (what the provider maintains piece by piece); `certificates` are the
    ones it serves, with their keys; `agent_tunnels`, where it takes its agents' tunnels."""
    services = sorted(services, key=lambda svc: (svc.project, svc.name))
    served = list(certificates) if tls_port(gateway, ()) is not None else []
    answers: dict[str, list[AcmeChallenge]] = {}
    for challenge in sorted(challenges, key=lambda c: c.token):
        answer = AcmeChallenge(challenge.token, challenge.key_authorization)
        answers.setdefault(challenge.hostname.lower(), []).append(answer)
    routes = [
        r
        for s in services
        if (
            r := service_route(
                gateway,
                s,
                replicas.get(s.id, ()),
                tls_ready=covered(served, s.spec.hostname),
                challenges=tuple(answers.get(s.spec.hostname.lower(), ())),
                takes_tunnels=agent_tunnels is not None,
                credentials=credentials,
            )
        )
        is not None
    ]
    ports = {p for s in services if is_catch_all(s) and (p := logical_port(s)) is not None}
    shells = gateway_listeners(
        gateway,
        ports,
        any(is_catch_all(s) and logical_port(s) == HTTP_PORT for s in services),
        tls_port(gateway, served),
    )
    listeners = tuple(
        replace(shell, virtual_hosts=tuple(r.virtual_host for r in routes if r.listener == shell.name))
        for shell in shells
    )
    secrets = tuple(sorted((c.secret for c in served), key=lambda s: s.name))
    backends = tuple(backend for route in routes for backend in route.backends)
    return GatewayIR(gateway.id, listeners, backends, secrets, agent_tunnels)
