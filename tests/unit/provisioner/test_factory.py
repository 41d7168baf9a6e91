"""Picking a backend per (project, backend) with the project's credentials."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from gatehouse.v1 import resources_pb2
from services.provisioner.backends.base import BackendError, GatewayBackend, HostInfo
from services.provisioner.backends.factory import BackendFactory
from services.provisioner.credentials import (
    AWSBackendConfig,
    BackendConfig,
    LayeredCredentials,
    RegistryCredentials,
)
from tests.support.static_credentials import StaticCredentials


class Named:
    def __init__(self, name: str, config: BackendConfig | None = None) -> None:
        self.name = name
        self.config = config

    async def create_or_update(
        self, gateway: resources_pb2.Gateway, serving: Collection[str] | None = None
    ) -> HostInfo:
        return HostInfo(hostname=self.name)

    async def delete(self, gateway: resources_pb2.Gateway) -> None:
        return None


def aws(secret: str) -> AWSBackendConfig:
    return AWSBackendConfig.model_validate(
        {"type": "aws", "creds": {"type": "access_key", "access_key": "AKIA", "secret_key": secret}}
    )


def factory(configs: dict[tuple[str, str], BackendConfig]) -> tuple[BackendFactory, list[BackendConfig]]:
    built: list[BackendConfig] = []

    def build(config: BackendConfig) -> GatewayBackend:
        built.append(config)
        return Named("aws", config)

    credentials = StaticCredentials(configs)
    return BackendFactory({"local": Named("local")}, credentials, {"aws": build}, ": add it"), built


def test_local_needs_no_credentials() -> None:
    backends, _ = factory({})
    assert backends.get("local", "main").name == "local"


def test_a_cloud_backend_is_built_per_project_from_its_credentials_and_kept() -> None:
    configs: dict[tuple[str, str], BackendConfig] = {
        ("main", "aws"): aws("one"),
        ("research", "aws"): aws("two"),
    }
    backends, built = factory(configs)
    main = backends.get("aws", "main")
    assert backends.get("aws", "main") is main
    assert backends.get("aws", "research") is not main
    assert len(built) == 2


def test_changed_credentials_build_the_backend_again() -> None:
    configs: dict[tuple[str, str], BackendConfig] = {("main", "aws"): aws("one")}
    backends, built = factory(configs)
    first = backends.get("aws", "main")
    configs[("main", "aws")] = aws("rotated")
    assert backends.get("aws", "main") is not first
    assert len(built) == 2


def test_a_project_without_the_backend_fails_saying_where_to_add_it() -> None:
    backends, _ = factory({})
    with pytest.raises(BackendError, match=r"^project main has no aws backend configured: add it$"):
        backends.get("aws", "main")
    with pytest.raises(BackendError, match="the gcp backend is not configured on this server"):
        backends.get("gcp", "main")


async def test_a_projects_registry_backend_is_checked_on_every_refresh_and_never_anothers() -> None:
    stored: dict[tuple[str, str], dict[str, Any]] = {
        ("first", "aws"): {
            "type": "aws",
            "creds": {"type": "access_key", "access_key": "AKIA", "secret_key": "one"},
        },
        ("second", "aws"): {"type": "aws", "creds": {"type": "default"}},
    }

    async def resolve(project: str, backend: str) -> dict[str, Any] | None:
        return stored.get((project, backend))

    built: list[BackendConfig] = []

    def build(config: BackendConfig) -> GatewayBackend:
        built.append(config)
        return Named("aws", config)

    backends = BackendFactory(
        {}, LayeredCredentials(RegistryCredentials(resolve)), {"aws": build}, ": add it"
    )
    await backends.prepare("aws", "first")
    assert backends.get("aws", "first").name == "aws" and built == [aws("one")]
    with pytest.raises(BackendError, match=r"^project second's aws backend: creds of type default"):
        await backends.prepare("aws", "second")
    with pytest.raises(BackendError, match=r"^project second has no aws backend configured"):
        backends.get("aws", "second")
    # A configuration that turns bad is not replaced by the last good one.
    stored[("first", "aws")] = {**stored[("first", "aws")], "endpoint_url": "http://169.254.169.254/"}
    with pytest.raises(BackendError, match=r"endpoint_url 169\.254\.169\.254 is link-local"):
        await backends.prepare("aws", "first")
    with pytest.raises(BackendError, match=r"^project first has no aws backend configured"):
        backends.get("aws", "first")
    assert built == [aws("one")]
