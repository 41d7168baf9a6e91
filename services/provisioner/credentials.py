"""Per-project backend credentials, configured once in `$GATEHOUSE_HOME/server/config.yml`.

The format is dstack's, so an existing dstack server config works as is::

    projects:
      - name: main
        backends:
          - type: aws
            creds: {type: access_key, access_key: AKIA…, secret_key: …}
            endpoint_url: http://127.0.0.1:5000     # optional: emulators, private clouds
          - type: gcp
            project_id: my-project
            creds: {type: service_account, filename: ~/gcp-key.json}
          - type: azure
            subscription_id: …
            tenant_id: …
            creds: {type: client, client_id: …, client_secret: …}
          - type: kubernetes
            kubeconfig: {filename: ~/.kube/config}

Backend types Gatehouse cannot host gateways on (dstack has many more) and keys it does not use are
ignored. The file is read again whenever it changes, so no restart is needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from services.common.addresses import Network
from services.common.backend_configs import (
    BACKEND_CONFIG,
    CLOUD_BACKENDS,
    AccessKeyCreds,
    AWSBackendConfig,
    AzureBackendConfig,
    BackendConfig,
    ClientCreds,
    DefaultCreds,
    FileOrData,
    GCPBackendConfig,
    KubernetesBackendConfig,
    ServiceAccountCreds,
    _Model,
    one_line,
)
from services.common.project_backends import Refused, check_project_backend
from services.provisioner.backends.base import BackendError

__all__ = [
    "CLOUD_BACKENDS",
    "AWSBackendConfig",
    "AccessKeyCreds",
    "AzureBackendConfig",
    "BackendConfig",
    "ClientCreds",
    "DefaultCreds",
    "FileOrData",
    "GCPBackendConfig",
    "KubernetesBackendConfig",
    "ServiceAccountCreds",
]

log = logging.getLogger(__name__)


def read_file_or_data(value: FileOrData, what: str) -> str:
    """A credential given inline (`data`) or as a file (`filename`)."""
    if value.data is not None:
        return value.data.get_secret_value()
    if value.filename is None:
        raise BackendError(f"{what}: set `filename` or `data`")
    path = Path(value.filename).expanduser()
    try:
        return path.read_text()
    except OSError as error:
        raise BackendError(f"{what}: cannot read {path}: {error.strerror}") from None


class _Project(_Model):
    name: str
    backends: list[dict[str, Any]] = []


class _ServerConfig(_Model):
    projects: list[_Project] = []


class CredentialsSource(Protocol):
    def backend_config(self, project: str, backend: str) -> BackendConfig | None:
        """The project's configuration of a backend; None when it has none. BackendError if invalid."""
        ...


class ServerConfigFile:
    """`config.yml`, parsed again when its modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._config = _ServerConfig()

    def _load(self) -> _ServerConfig:
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._config = None, _ServerConfig()
                return self._config
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                try:
                    raw = yaml.safe_load(self.path.read_text()) or {}
                    config = _ServerConfig.model_validate(raw)
                except yaml.YAMLError as error:
                    raise BackendError(f"{self.path}: not YAML: {str(error).splitlines()[0]}") from None
                except ValidationError as error:
                    raise BackendError(one_line(error, str(self.path), raw)) from None
                self._stamp, self._config = stamp, config
            return self._config

    def backend_config(self, project: str, backend: str) -> BackendConfig | None:
        for entry in self._load().projects:
            if entry.name != project:
                continue
            for index, raw in enumerate(entry.backends):
                if raw.get("type") != backend:
                    continue
                try:
                    return BACKEND_CONFIG.validate_python(raw)
                except ValidationError as error:
                    where = f"{self.path}: project {project}, backends[{index}] ({backend})"
                    raise BackendError(one_line(error, where, raw)) from None
        return None


class RegistryCredentials:
    """Credentials added with `gatehouse backend add`, kept encrypted by the registry. `refresh`
    asks the registry right before a backend is used, so a just-added backend is found at once.

    These are a project's, not the operator's: each is checked again before use (inline credentials
    only, public endpoints or `networks`), so one stored before those rules is refused too."""

    def __init__(
        self,
        resolve: Callable[[str, str], Awaitable[dict[str, Any] | None]],
        networks: Sequence[Network] = (),
    ) -> None:
        self._resolve = resolve
        self._networks = tuple(networks)
        self._configs: dict[tuple[str, str], BackendConfig] = {}

    async def refresh(self, project: str, backend: str) -> None:
        raw = await self._resolve(project, backend)
        self._configs.pop((project, backend), None)
        if raw is None:
            return
        try:
            config = BACKEND_CONFIG.validate_python(raw)
        except ValidationError as error:
            raise BackendError(one_line(error, f"project {project}'s {backend} backend", raw)) from None
        try:
            await check_project_backend(config, raw, self._networks)
        except Refused as refused:
            raise BackendError(f"project {project}'s {refused}") from None
        self._configs[(project, backend)] = config

    def backend_config(self, project: str, backend: str) -> BackendConfig | None:
        return self._configs.get((project, backend))


class LayeredCredentials:
    """The first source that knows a project's backend wins (the registry, then config.yml)."""

    def __init__(self, *sources: CredentialsSource) -> None:
        self._sources = sources

    async def refresh(self, project: str, backend: str) -> None:
        for source in self._sources:
            refresh = getattr(source, "refresh", None)
            if refresh is not None:
                await refresh(project, backend)

    def backend_config(self, project: str, backend: str) -> BackendConfig | None:
        for source in self._sources:
            found = source.backend_config(project, backend)
            if found is not None:
                return found
        return None
