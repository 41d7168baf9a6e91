"""Picks the backend for a gateway: `local`, or a cloud backend built from the gateway's project's
credentials (one instance per project and configuration, rebuilt when the configuration changes)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr

from services.provisioner.backends.base import BackendError, GatewayBackend
from services.provisioner.credentials import BackendConfig, CredentialsSource

CloudBuilder = Callable[[BackendConfig], GatewayBackend]


def _revealed(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _revealed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(item) for item in value]
    return value


def config_key(config: BackendConfig) -> str:
    """Changes when anything in the configuration changes, secrets included (which dumps mask)."""
    dumped = json.dumps(_revealed(config.model_dump()), sort_keys=True, default=str)
    return hashlib.sha256(dumped.encode()).hexdigest()


class BackendFactory:
    def __init__(
        self,
        backends: Mapping[str, GatewayBackend],
        credentials: CredentialsSource | None = None,
        cloud: Mapping[str, CloudBuilder] | None = None,
        credentials_help: str = "",
    ) -> None:
        self._backends = dict(backends)
        self._credentials = credentials
        self._cloud = dict(cloud or {})
        self._help = credentials_help
        self._built: dict[tuple[str, str], tuple[str, GatewayBackend]] = {}
        self._lock = threading.Lock()

    def knows(self, name: str) -> bool:
        """Whether this server can run `name` gateways at all (with the right credentials)."""
        return name in self._backends or name in self._cloud

    async def prepare(self, name: str, project: str) -> None:
        """Brings the project's credentials for `name` up to date (sources that can refresh do)."""
        refresh = getattr(self._credentials, "refresh", None)
        if refresh is not None and name in self._cloud:
            await refresh(project, name)

    def get(self, name: str, project: str = "") -> GatewayBackend:
        backend = self._backends.get(name)
        if backend is not None:
            return backend
        builder = self._cloud.get(name)
        if builder is None or self._credentials is None:
            configured = ", ".join(sorted({*self._backends, *self._cloud}))
            raise BackendError(
                f"the {name} backend is not configured on this server (configured: {configured}); "
                "delete the gateway and apply it with one of those"
            )
        config = self._credentials.backend_config(project, name)
        if config is None:
            raise BackendError(f"project {project} has no {name} backend configured{self._help}")
        key = config_key(config)
        with self._lock:
            built = self._built.get((project, name))
            if built is None or built[0] != key:
                built = (key, builder(config))
                self._built[(project, name)] = built
            return built[1]
