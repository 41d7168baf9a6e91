"""Backend credentials given in code, for tests."""

from __future__ import annotations

from services.provisioner.credentials import BackendConfig


class StaticCredentials:
    """Credentials given in code (tests, embedding)."""

    def __init__(self, configs: dict[tuple[str, str], BackendConfig]) -> None:
        self._configs = configs

    def backend_config(self, project: str, backend: str) -> BackendConfig | None:
        return self._configs.get((project, backend))
