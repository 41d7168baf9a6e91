"""Credentials on the watch feed: tokens and API keys with what they open, and their withdrawal."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import grpc
import pytest
from google.protobuf import struct_pb2

from gatehouse.client.mirror import RegistryMirror
from gatehouse.v1 import registry_pb2, resources_pb2
from services.common.auth import hash_token
from tests.integration.registry.conftest import RegistryServer

pytestmark = pytest.mark.real


async def _until(
    mirror: RegistryMirror,
    stream: grpc.aio.UnaryStreamCall[registry_pb2.WatchRequest, registry_pb2.WatchEvent],
    check: Callable[[], object],
    within: float = 10.0,
) -> None:
    async def follow() -> None:
        while not check():
            event = await stream.read()
            assert isinstance(event, registry_pb2.WatchEvent)
            mirror.apply([event])

    await asyncio.wait_for(follow(), within)


def _by_hash(mirror: RegistryMirror, value: str) -> list[resources_pb2.Credential]:
    return [c for c in mirror.credentials.values() if c.hash == hash_token(value)]


async def test_tokens_and_keys_are_published_and_withdrawn(registry_server: RegistryServer) -> None:
    suffix = secrets.token_hex(3)
    admin = registry_server.stubs()
    system = registry_server.stubs(registry_server.system_token)
    mirror = RegistryMirror()
    mirror.load(await system.watch.Snapshot(registry_pb2.SnapshotRequest()))
    stream = system.watch.Watch(registry_pb2.WatchRequest(since_revision=mirror.revision))

    created = await admin.users.Create(registry_pb2.CreateUserRequest(name=f"dan-{suffix}"))
    await _until(mirror, stream, lambda: _by_hash(mirror, created.token))
    credential = _by_hash(mirror, created.token)[0]
    assert list(credential.projects) == [] and credential.user == f"dan-{suffix}" and not credential.admin

    project = f"shop-{suffix}"
    await admin.projects.Create(registry_pb2.CreateProjectRequest(name=project))
    await admin.projects.SetMember(registry_pb2.SetMemberRequest(project=project, user=f"dan-{suffix}"))
    await _until(mirror, stream, lambda: list(_by_hash(mirror, created.token)[0].projects) == [project])

    gateway = {"type": "gateway", "name": "gw-keys", "backend": "local", "region": "local"}
    service = {"type": "service", "name": "api", "gateway": "gw-keys", "port": "7100:8000"}
    for config in (gateway, service):
        struct = struct_pb2.Struct()
        struct.update(config)
        await admin.configurations.Apply(registry_pb2.ApplyRequest(project=project, configuration=struct))
    key = await admin.service_keys.Create(
        registry_pb2.CreateServiceKeyRequest(project=project, service="api")
    )
    assert key.key.startswith("ghk_") and key.name.startswith("key-")
    await _until(mirror, stream, lambda: _by_hash(mirror, key.key))
    assert _by_hash(mirror, key.key)[0].service_id
    listed = await admin.service_keys.List(
        registry_pb2.ListServiceKeysRequest(project=project, service="api")
    )
    assert [k.name for k in listed.keys] == [key.name] and not listed.keys[0].key

    await admin.service_keys.Delete(
        registry_pb2.DeleteServiceKeyRequest(project=project, service="api", name=key.name)
    )
    await admin.users.RevokeTokens(registry_pb2.RevokeTokensRequest(user=f"dan-{suffix}"))
    await _until(
        mirror, stream, lambda: not _by_hash(mirror, key.key) and not _by_hash(mirror, created.token)
    )
    stream.cancel()
    await admin.close()
    await system.close()
