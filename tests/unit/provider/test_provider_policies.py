"""Registry services → traffic policies in the IR, and the credentials each service's virtual host
carries (hashes only) kept current by the feed."""

from __future__ import annotations

import hashlib
from typing import Any

from envoy.config.route.v3 import route_components_pb2
from google.protobuf import json_format

from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.policies import Authorization, RateLimit, RateLimitKey
from gateway_xds.provider import policies
from gateway_xds.provider.registry import RegistryProvider
from gateway_xds.resources import SCOPED_ROUTE
from gateway_xds.translate.host_auth import AUTH_CHECK_FILTER

PUT, DELETE = registry_pb2.EVENT_TYPE_PUT, registry_pb2.EVENT_TYPE_DELETE


def service(**spec: Any) -> resources_pb2.Service:
    return resources_pb2.Service(
        id="svc-1",
        project="shop",
        name="api",
        spec=resources_pb2.ServiceSpec(**spec),
    )


def test_services_need_a_credential_unless_auth_is_off() -> None:
    assert policies.authorization(service(hostname="api.example.test", auth=True)) == Authorization(
        "shop", "svc-1"
    )
    assert policies.authorization(service(hostname="api.example.test", auth=False)) is None
    # Port-mapped services (seed 004) too.
    assert policies.authorization(service(gateway_port=5001, auth=True)) == Authorization("shop", "svc-1")
    assert policies.authorization(service(gateway_port=5001, auth=False)) is None


def test_rate_limits_and_cors_follow_the_spec() -> None:
    limited = service(
        rate_limits=[
            resources_pb2.RateLimit(prefix="/api", rps=0.5, burst=3, key="ip_address"),
            resources_pb2.RateLimit(prefix="/", rps=10, key="header", header="X-Api-Key"),
        ],
        model="tiny",
    )
    assert policies.rate_limits(limited) == (
        RateLimit("/api", 0.5, 3, RateLimitKey.IP_ADDRESS),
        RateLimit("/", 10, 0, RateLimitKey.HEADER, "x-api-key"),
    )
    assert policies.cors(limited) and not policies.cors(service())


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class World:
    """A gateway with two projects' services (two each), fed credentials as the registry sends them."""

    def __init__(self) -> None:
        self.cache = SnapshotCache()
        self.provider = RegistryProvider(None, self.cache)
        self.revision = 0
        gateway = resources_pb2.Gateway(
            id="gw-1",
            name="edge",
            spec=resources_pb2.GatewaySpec(domain="example.test"),
            status=resources_pb2.GatewayStatus(listen_address="127.0.0.1", http_port=8080),
        )
        self.send(PUT, gateway=gateway)
        for project, name in (("shop", "cart"), ("shop", "till"), ("bank", "vault"), ("bank", "lobby")):
            spec = resources_pb2.ServiceSpec(
                gateway_id="gw-1", hostname=f"{name}.example.test", auth=name != "lobby"
            )
            self.send(
                PUT, service=resources_pb2.Service(id=f"svc-{name}", project=project, name=name, spec=spec)
            )

    def send(self, kind: registry_pb2.EventType, **objects: Any) -> set[str]:
        self.revision += 1
        event = registry_pb2.WatchEvent(revision=self.revision, type=kind, **objects)
        return self.provider.apply(self.provider.mirror.apply([event]))

    def virtual_host(self, name: str) -> route_components_pb2.VirtualHost:
        snapshot = self.cache.get("gw-1")
        assert snapshot is not None
        scope = snapshot.entries(SCOPED_ROUTE)[f"svc_{'shop' if name in ('cart', 'till') else 'bank'}_{name}"]
        (virtual_host,) = scope.message.route_configuration.virtual_hosts  # type: ignore[attr-defined]
        return virtual_host

    def table(self, name: str) -> dict[str, str]:
        metadata = self.virtual_host(name).metadata.filter_metadata
        if AUTH_CHECK_FILTER not in metadata:
            return {}
        return dict(json_format.MessageToDict(metadata[AUTH_CHECK_FILTER]))


def test_each_service_carries_the_hashes_of_what_opens_it_and_follows_the_feed() -> None:
    world = World()
    ann = resources_pb2.Credential(id="t-ann", hash=digest("ann-token"), user="ann", projects=["shop"])
    root = resources_pb2.Credential(id="t-root", hash=digest("root-token"), user="root", admin=True)
    cart_key = resources_pb2.Credential(id="k-cart", hash=digest("cart-key"), service_id="svc-cart")
    for credential in (ann, root, cart_key):
        world.send(PUT, credential=credential)
    assert world.table("cart") == {ann.hash: "user:ann", root.hash: "user:root", cart_key.hash: "key:k-cart"}
    assert world.table("till") == {ann.hash: "user:ann", root.hash: "user:root"}
    assert world.table("vault") == {root.hash: "user:root"}
    # Open to anyone: no table at all.
    assert world.table("lobby") == {}
    # Only hashes reach Envoy, never a credential.
    for name in ("cart", "till", "vault"):
        sent = world.virtual_host(name).SerializeToString()
        assert not any(value in sent for value in (b"ann-token", b"root-token", b"cart-key"))

    vault_before = world.virtual_host("vault").SerializeToString(deterministic=True)
    world.send(DELETE, credential=ann)
    assert world.table("cart") == {root.hash: "user:root", cart_key.hash: "key:k-cart"}
    assert world.table("till") == {root.hash: "user:root"}
    # Another project's services are not touched by a member's revocation.
    assert world.virtual_host("vault").SerializeToString(deterministic=True) == vault_before

    world.send(DELETE, credential=root)
    assert world.table("vault") == {}
    # A whole list again (a reconnect to the registry): the tables are rebuilt from it.
    mirror = world.provider.mirror
    listed = registry_pb2.SnapshotResponse(
        revision=world.revision + 1,
        gateways=mirror.gateways.values(),
        services=mirror.services.values(),
        credentials=[ann, cart_key],
    )
    world.provider.apply(world.provider.mirror.load(listed))
    assert world.table("cart") == {ann.hash: "user:ann", cart_key.hash: "key:k-cart"}
