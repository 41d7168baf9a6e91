"""Registry services → traffic policies in the IR, and the credential index kept current by the feed."""

from __future__ import annotations

import hashlib

from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.authz.credentials import CredentialIndex
from gateway_xds.cache.snapshot_cache import SnapshotCache
from gateway_xds.ir.policies import Authorization, RateLimit, RateLimitKey
from gateway_xds.provider import policies
from gateway_xds.provider.registry import RegistryProvider

PUT, DELETE = registry_pb2.EVENT_TYPE_PUT, registry_pb2.EVENT_TYPE_DELETE


def service(**spec: object) -> resources_pb2.Service:
    return resources_pb2.Service(
        id="svc-1",
        project="shop",
        name="api",
        spec=resources_pb2.ServiceSpec(**spec),  # type: ignore[arg-type]
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


def test_the_credential_index_follows_the_feed() -> None:
    index = CredentialIndex()
    provider = RegistryProvider(None, SnapshotCache(), credentials=index)
    token = hashlib.sha256(b"secret").hexdigest()
    credential = resources_pb2.Credential(id="t1", hash=token, user="ann", projects=["shop"])

    def send(kind: int, revision: int) -> None:
        event = registry_pb2.WatchEvent(revision=revision, type=kind, credential=credential)
        provider.apply(provider.mirror.apply([event]))

    send(PUT, 1)
    assert index.decide("Bearer secret", "shop", "svc-1").allowed
    send(DELETE, 2)
    assert not index.decide("Bearer secret", "shop", "svc-1").allowed
    provider.apply(provider.mirror.load(registry_pb2.SnapshotResponse(revision=3, credentials=[credential])))
    assert index.decide("Bearer secret", "shop", "svc-1").allowed
