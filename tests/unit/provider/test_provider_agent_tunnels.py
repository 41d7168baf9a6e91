"""Replicas behind agents: a gateway with a tunnel identity takes its agents' tunnels (on its HTTPS port
too, when it has one), and a service whose replica is an agent's is served over them (and equals the
whole build)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2

from gatehouse.agent_tunnels import (
    TUNNEL_ALPN,
    TUNNEL_LISTENER,
    agent_name,
    node_id,
    tunnel_address,
    tunnel_node,
    tunnel_server_name,
)
from gatehouse.v1 import resources_pb2
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.provider.agent_tunnels import agent_tunnels
from gateway_xds.provider.build import gateway_ir
from gateway_xds.provider.registry import RegistryProvider
from gateway_xds.publish import snapshot_from_ir
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, SECRET
from gateway_xds.translate.agent_tunnels import CA_SECRET, IDENTITY_SECRET, REVERSE_TUNNEL_FILTER
from tests.unit.provider.test_provider_incremental import DELETE, PUT, Feed, gateway, service, versions

PEM = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"


class FixedIdentity:
    port = 8444

    def __init__(self) -> None:
        self.asked: list[str] = []

    def certificate(self, gateway_id: str) -> tuple[str, str]:
        self.asked.append(gateway_id)
        return PEM, "-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n"

    def trusted_ca(self) -> str:
        return PEM


def agent_replica(name: str, node: str = "8f49d07c", ready: bool = True) -> resources_pb2.Replica:
    return resources_pb2.Replica(
        id=f"rep-{name}-agent", service_id=f"svc-{name}", address=tunnel_address(node, 8000), ready=ready
    )


def whole(provider: RegistryProvider, identity: FixedIdentity) -> dict[str, dict[str, str]]:
    mirror = provider.mirror
    services = [s for s in mirror.services.values() if s.spec.gateway_id == "gw-1"]
    replicas = {s.id: [r for r in mirror.replicas.values() if r.service_id == s.id] for s in services}
    gw = mirror.gateways["gw-1"]
    ir = gateway_ir(gw, services, replicas, agent_tunnels=agent_tunnels(gw, identity))
    return versions(snapshot_from_ir(ir, mirror.revision))


def test_tunnel_addresses_name_their_node_and_nothing_else() -> None:
    assert node_id(0x0A12) == "0a12" and node_id(0x8F49) == "8f49"
    assert tunnel_node(tunnel_address("0a12", 8000)) == "0a12"
    for other in ("10.0.0.1:8000", "0a12.tunnel.gatehouse.invalid", "x.tunnel.gatehouse.invalid:80", "a:b"):
        assert tunnel_node(other) is None
    assert agent_name("svc-1", "gw-1") == "svc-1.gw-1.agents.gatehouse"


def test_a_service_with_an_agent_is_served_over_its_tunnels() -> None:
    cache, identity = SnapshotCache(), FixedIdentity()
    provider = RegistryProvider(None, cache, tunnels=identity)
    feed = Feed(provider)
    feed.send((PUT, gateway()), (PUT, service("laptop", gateway_port=5001)))
    snapshot = cache.get("gw-1")
    assert snapshot is not None and versions(snapshot) == whole(provider, identity)
    # The gateway takes tunnels before any agent comes: the listener is stable.
    assert set(snapshot.entries(LISTENER)) == {"http", "port-5001", TUNNEL_LISTENER}
    assert set(snapshot.entries(SECRET)) == {IDENTITY_SECRET, CA_SECRET}
    assert snapshot.get(ENDPOINT, "svc_main_laptop") is not None

    feed.send((PUT, agent_replica("laptop")))
    snapshot = cache.get("gw-1")
    assert snapshot is not None and versions(snapshot) == whole(provider, identity)
    resource = snapshot.get(CLUSTER, "svc_main_laptop")
    assert resource is not None
    cluster = resource.message
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert cluster.cluster_type.name == "envoy.clusters.reverse_connection"
    assert snapshot.get(ENDPOINT, "svc_main_laptop") is None  # its connections are the tunnels
    assert snapshot.consistent() == []

    # The agent leaves: back to an EDS cluster with no endpoints (503, no ready replicas).
    feed.send((DELETE, agent_replica("laptop")))
    snapshot = cache.get("gw-1")
    assert snapshot is not None and versions(snapshot) == whole(provider, identity)
    assert snapshot.get(ENDPOINT, "svc_main_laptop") is not None


def test_without_a_tunnel_identity_an_agents_replica_is_not_an_endpoint() -> None:
    cache = SnapshotCache()
    provider = RegistryProvider(None, cache)
    feed = Feed(provider)
    feed.send((PUT, gateway()), (PUT, service("laptop", gateway_port=5001)), (PUT, agent_replica("laptop")))
    snapshot = cache.get("gw-1")
    assert snapshot is not None and TUNNEL_LISTENER not in snapshot.entries(LISTENER)
    endpoints = snapshot.get(ENDPOINT, "svc_main_laptop")
    assert endpoints is not None and list(endpoints.message.endpoints) == []  # type: ignore[attr-defined]


def https_gateway(certificate: str = "lets-encrypt") -> resources_pb2.Gateway:
    secure = gateway()
    secure.spec.certificate.type = certificate
    secure.status.https_port = 8443
    return secure


def test_a_gateway_with_https_takes_tunnels_on_its_https_port_too() -> None:
    cache, identity = SnapshotCache(), FixedIdentity()
    provider = RegistryProvider(None, cache, tunnels=identity)
    feed = Feed(provider)
    feed.send((PUT, https_gateway()), (PUT, service("laptop", hostname="laptop.example.test")))
    snapshot = cache.get("gw-1")
    assert snapshot is not None and versions(snapshot) == whole(provider, identity)
    assert set(snapshot.entries(LISTENER)) == {"http", "https", TUNNEL_LISTENER}
    https = snapshot.get(LISTENER, "https")
    assert https is not None
    listener = https.message
    assert isinstance(listener, listener_pb2.Listener)
    tunnel_chains = [c for c in listener.filter_chains if c.name == TUNNEL_LISTENER]
    assert len(tunnel_chains) == 1
    match = tunnel_chains[0].filter_chain_match
    assert (list(match.server_names), list(match.application_protocols)) == (
        [tunnel_server_name("gw-1")],
        [TUNNEL_ALPN],
    )
    assert tunnel_chains[0].filters[0].name == REVERSE_TUNNEL_FILTER
    assert listener.connection_balance_config.HasField("exact_balance")

    # TLS ended at a load balancer (ACM): no HTTPS listener at the gateway, the tunnel port only.
    feed.send((PUT, https_gateway("acm")))
    snapshot = cache.get("gw-1")
    assert snapshot is not None and versions(snapshot) == whole(provider, identity)
    assert set(snapshot.entries(LISTENER)) == {"http", TUNNEL_LISTENER}


def test_without_a_tunnel_identity_the_https_listener_takes_no_tunnels() -> None:
    cache = SnapshotCache()
    feed = Feed(RegistryProvider(None, cache))
    feed.send((PUT, https_gateway()))
    snapshot = cache.get("gw-1")
    https = snapshot.get(LISTENER, "https") if snapshot is not None else None
    assert https is not None
    listener = https.message
    assert isinstance(listener, listener_pb2.Listener)
    assert [c.name for c in listener.filter_chains if c.name == TUNNEL_LISTENER] == []
    assert not listener.HasField("connection_balance_config")
