"""Delta responses encoded straight from the cache's serialised resources.

Built as a message, a DeltaDiscoveryResponse copies every resource into a new Resource and Any, then
into the response, then into the bytes gRPC sends: for a node's first sync of 10,000 services that
is 30,000 small messages and several copies of every byte, made again for every node. A protobuf
message's encoding is the concatenation of its fields' encodings (repeated fields may come in any
number of pieces), so a response is encoded here field by field: its strings, then one
length-delimited field per resource, written from the bytes the cache keeps: one copy, no
intermediate messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from gateway_xds.cache.resource import Resource

# Field keys (field number << 3 | wire type 2, length-delimited).
_RESPONSE_SYSTEM_VERSION = b"\x0a"  # DeltaDiscoveryResponse.system_version_info = 1
_RESPONSE_RESOURCES = b"\x12"  # DeltaDiscoveryResponse.resources = 2
_RESPONSE_TYPE_URL = b"\x22"  # DeltaDiscoveryResponse.type_url = 4
_RESPONSE_NONCE = b"\x2a"  # DeltaDiscoveryResponse.nonce = 5
_RESPONSE_REMOVED = b"\x32"  # DeltaDiscoveryResponse.removed_resources = 6
_RESOURCE_VERSION = b"\x0a"  # Resource.version = 1
_RESOURCE_RESOURCE = b"\x12"  # Resource.resource = 2 (an Any)
_RESOURCE_NAME = b"\x1a"  # Resource.name = 3
_ANY_TYPE_URL = b"\x0a"  # Any.type_url = 1
_ANY_VALUE = b"\x12"  # Any.value = 2

_SMALL = [bytes((n,)) for n in range(128)]


def _varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string_field(key: bytes, value: str, parts: list[bytes]) -> None:
    """Appends a string field to `parts`, or nothing for an empty string (proto3's default)."""
    if value:
        encoded = value.encode()
        parts += (key, _varint(len(encoded)), encoded)


def _encode_resources(type_url: str, resources: Iterable[Resource], parts: list[bytes]) -> list[str]:
    """Appends DeltaDiscoveryResponse field 2 for each resource, Resource(version, resource=Any(
    type_url, value), name), to `parts`; returns the resources' names."""
    type_url_bytes = type_url.encode()
    # Any's type_url field and the key of its value field: the same for every resource of the type.
    any_head = _ANY_TYPE_URL + _varint(len(type_url_bytes)) + type_url_bytes + _ANY_VALUE
    names: list[str] = []
    append, extend, varint = names.append, parts.extend, _varint
    for resource in resources:
        value, version, name = resource.value, resource.version.encode(), resource.name.encode()
        value_size = varint(len(value))
        packed_size = len(any_head) + len(value_size) + len(value)
        packed_size_bytes = varint(packed_size)
        version_size, name_size = varint(len(version)), varint(len(name))
        body_size = 3 + len(version_size) + len(version) + len(packed_size_bytes) + packed_size
        body_size += len(name_size) + len(name)
        extend((
            _RESPONSE_RESOURCES, varint(body_size),
            _RESOURCE_VERSION, version_size, version,
            _RESOURCE_RESOURCE, packed_size_bytes, any_head, value_size, value,
            _RESOURCE_NAME, name_size, name,
        ))  # fmt: skip
        append(resource.name)
    return names


def _encode_fields(
    system_version_info: str,
    type_url: str,
    resources: Iterable[Resource],
    removed_resources: list[str],
    parts: list[bytes],
) -> list[str]:
    """Appends every field of the response but its nonce to `parts`; returns the resources' names."""
    _string_field(_RESPONSE_SYSTEM_VERSION, system_version_info, parts)
    _string_field(_RESPONSE_TYPE_URL, type_url, parts)
    for name in removed_resources:
        encoded = name.encode()
        parts += (_RESPONSE_REMOVED, _varint(len(encoded)), encoded)
    return _encode_resources(type_url, resources, parts)


class ResponseBodies:
    """Delta responses' encodings but their nonces, shared by the streams that send the same thing.

    A change goes out to every Envoy of the gateway as the same responses but for their nonces
    (the nonce field goes last: a message's fields may come in any order). Only small responses are
    kept, the most recent `capacity` of them, keyed by the resource objects themselves (a resource's
    object is its content: the snapshot keeps one per version).
    """

    def __init__(self, capacity: int = 64, max_resources: int = 64) -> None:
        self._capacity = capacity
        self._max_resources = max_resources
        self._bodies: dict[tuple[object, ...], tuple[bytes, tuple[str, ...]]] = {}
        self.hits = 0

    def body(
        self, system_version_info: str, type_url: str, resources: list[Resource], removed_resources: list[str]
    ) -> tuple[bytes, list[str]] | None:
        """The fields but the nonce, encoded, and the resources' names; None for a large response
        (encoded with its nonce in one piece instead: a first sync is megabytes, copied once)."""
        if len(resources) + len(removed_resources) > self._max_resources:
            return None
        key = (system_version_info, type_url, *resources, None, *removed_resources)
        found = self._bodies.get(key)
        if found is not None:
            self.hits += 1
            return found[0], list(found[1])
        parts: list[bytes] = []
        names = _encode_fields(system_version_info, type_url, resources, removed_resources, parts)
        body = b"".join(parts)
        if len(self._bodies) >= self._capacity:
            del self._bodies[next(iter(self._bodies))]  # the oldest
        self._bodies[key] = (body, tuple(names))
        return body, names


class EncodedDeltaResponse:
    """A DeltaDiscoveryResponse as the bytes to send. Its scalar fields and resource names are at
    hand; anything else (`resources`, ...) parses the bytes again, which only tests and debugging
    need."""

    __slots__ = (
        "_data",
        "_parsed",
        "_size",
        "nonce",
        "removed_resources",
        "resource_names",
        "system_version_info",
        "type_url",
    )

    def __init__(
        self,
        *,
        system_version_info: str,
        type_url: str,
        resources: list[Resource],
        removed_resources: list[str],
        nonce: str,
        bodies: ResponseBodies | None = None,
    ) -> None:
        self.system_version_info = system_version_info
        self.type_url = type_url
        self.removed_resources = removed_resources
        self.nonce = nonce
        fields = (system_version_info, type_url, resources, removed_resources)
        shared = bodies.body(*fields) if bodies is not None else None
        parts: list[bytes] = []
        if shared is None:
            self.resource_names = _encode_fields(*fields, parts)
        else:
            parts.append(shared[0])
            self.resource_names = shared[1]
        _string_field(_RESPONSE_NONCE, nonce, parts)
        self._data: bytes | None = b"".join(parts)
        self._size = len(self._data)
        self._parsed: discovery_pb2.DeltaDiscoveryResponse | None = None

    def SerializeToString(self) -> bytes:  # the name gRPC's serializer and protobuf use
        if self._data is None:
            raise RuntimeError(f"{self!r} was sent and its bytes released")
        return self._data

    def take(self) -> bytes:
        """The bytes, released from this object: gRPC keeps the last response a stream sent until
        it sends the next, which for a node in step can be hours (and megabytes after a first sync)."""
        data = self.SerializeToString()
        self._data = None
        return data

    def ByteSize(self) -> int:
        return self._size

    @property
    def message(self) -> discovery_pb2.DeltaDiscoveryResponse:
        if self._parsed is None:
            self._parsed = discovery_pb2.DeltaDiscoveryResponse.FromString(self.SerializeToString())
        return self._parsed

    def __getattr__(self, name: str) -> Any:
        # Only reached for what the slots do not hold: the parsed message's other fields.
        return getattr(self.message, name)

    def __repr__(self) -> str:
        return (
            f"EncodedDeltaResponse(type_url={self.type_url!r}, nonce={self.nonce!r}, "
            f"resources={len(self.resource_names)}, removed={len(self.removed_resources)})"
        )
