"""Delta responses encoded from the cache's bytes decode to the message protobuf would have built."""

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from gateway_xds.cache.resource import Resource, make_resource
from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.publish import snapshot_from_ir
from gateway_xds.resources import CLUSTER, ENDPOINT, SCOPED_ROUTE
from gateway_xds.server.encoding import EncodedDeltaResponse, ResponseBodies
from gateway_xds.server.server import _serialize
from gateway_xds.testing.builders import domain_gateway

# Envoy's protos are untyped: a decoded DeltaDiscoveryResponse.
Decoded = Any


def cached(snapshot: Snapshot, type_url: str) -> list[Resource]:
    """The snapshot's resources of the type, by name."""
    resources = []
    for name in sorted(snapshot.entries(type_url)):
        resource = snapshot.get(type_url, name)
        assert resource is not None
        resources.append(resource)
    return resources


def built(
    type_url: str, resources: list[Resource], removed: list[str]
) -> discovery_pb2.DeltaDiscoveryResponse:
    """The response as a message, the way protobuf builds it."""
    entries = [discovery_pb2.Resource(name=r.name, version=r.version, resource=r.packed) for r in resources]
    return discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="7", type_url=type_url, resources=entries, removed_resources=removed, nonce="12"
    )


@pytest.mark.parametrize("type_url", [CLUSTER, ENDPOINT, SCOPED_ROUTE])
def test_a_gateways_resources_decode_as_built(type_url: str) -> None:
    snapshot = snapshot_from_ir(domain_gateway(20), 1)
    resources = cached(snapshot, type_url)
    encoded = EncodedDeltaResponse(
        system_version_info="7", type_url=type_url, resources=resources, removed_resources=["x"], nonce="12"
    )
    expected = built(type_url, resources, ["x"])
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(encoded.SerializeToString()) == expected
    assert encoded.ByteSize() == expected.ByteSize()
    assert encoded.resource_names == [r.name for r in resources]
    # Fields that are not kept apart come from the bytes.
    assert [r.version for r in encoded.resources] == [r.version for r in resources]


def test_long_fields_and_non_ascii_names() -> None:
    # Lengths of 128 bytes and more take several bytes to encode, at every level.
    name = "ü" * 100
    resource = make_resource(CLUSTER, name, cluster_pb2.Cluster(name=name, alt_stat_name="x" * 70_000))
    encoded = EncodedDeltaResponse(
        system_version_info="7", type_url=CLUSTER, resources=[resource], removed_resources=[], nonce="12"
    )
    decoded = discovery_pb2.DeltaDiscoveryResponse.FromString(encoded.SerializeToString())
    assert decoded == built(CLUSTER, [resource], [])
    assert decoded.resources[0].name == name


def test_removals_only() -> None:
    encoded = EncodedDeltaResponse(
        system_version_info="7", type_url=SCOPED_ROUTE, resources=[], removed_resources=["a", "b"], nonce="12"
    )
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(encoded.SerializeToString()) == built(
        SCOPED_ROUTE, [], ["a", "b"]
    )


def test_sending_releases_the_bytes() -> None:
    """gRPC holds the last response of a stream until the next one: it must not hold its bytes."""
    snapshot = snapshot_from_ir(domain_gateway(3), 1)
    resources = cached(snapshot, CLUSTER)
    encoded = EncodedDeltaResponse(
        system_version_info="1", type_url=CLUSTER, resources=resources, removed_resources=[], nonce="1"
    )
    size = encoded.ByteSize()
    assert len(_serialize(encoded)) == size
    assert encoded.ByteSize() == size
    with pytest.raises(RuntimeError):
        encoded.SerializeToString()
    message = built(CLUSTER, resources, [])
    assert _serialize(message) == message.SerializeToString()


def test_streams_share_a_body_and_keep_their_nonces() -> None:
    snapshot = snapshot_from_ir(domain_gateway(3), 1)
    resources = [snapshot.entries(CLUSTER)[name] for name in sorted(snapshot.entries(CLUSTER))]
    bodies = ResponseBodies(capacity=2, max_resources=3)

    def response(nonce: str, sent: list[Resource], removed: list[str]) -> Decoded:
        encoded = EncodedDeltaResponse(
            system_version_info="7", type_url=CLUSTER, resources=sent, removed_resources=removed, nonce=nonce,
            bodies=bodies,
        )  # fmt: skip
        assert encoded.resource_names == [r.name for r in sent]
        return discovery_pb2.DeltaDiscoveryResponse.FromString(encoded.SerializeToString())

    first, second = response("12", resources[:1], ["x"]), response("3", resources[:1], ["x"])
    assert bodies.hits == 1
    assert (first.nonce, second.nonce) == ("12", "3")
    second.nonce = "12"
    assert first == second == built(CLUSTER, resources[:1], ["x"])
    # Another set of resources, or of removals, is another body.
    assert response("4", resources[:2], ["x"]) == _with_nonce(built(CLUSTER, resources[:2], ["x"]), "4")
    assert response("5", resources[:1], []) == _with_nonce(built(CLUSTER, resources[:1], []), "5")
    assert bodies.hits == 1
    # Only the latest bodies are kept, and only small ones.
    response("6", resources[:1], ["x"])
    assert bodies.hits == 1
    response("7", resources, ["x"])
    response("8", resources, ["x"])
    assert bodies.hits == 1


def _with_nonce(message: Decoded, nonce: str) -> Decoded:
    message.nonce = nonce
    return message
