"""Azure management clients for one backend configuration, and Azure errors in the user's terms."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential, DefaultAzureCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient

from services.provisioner.backends.base import BackendError
from services.provisioner.credentials import AzureBackendConfig, ClientCreds

# ARM error codes worth trying again rather than failing the gateway.
TRANSIENT_CODES = frozenset(
    {"AnotherOperationInProgress", "RetryableError", "TooManyRequests", "InternalServerError", "Conflict"}
)
# Resource Manager answering with a redirect is not followed: it could point the server's requests
# (with the bearer token) at an address only the server reaches. (azure-identity follows none.)
NO_REDIRECTS = {"permit_redirects": False}

C = TypeVar("C")


def one_line(text: str) -> str:
    return " ".join(text.split())


def translate(error: Exception) -> Exception:
    if isinstance(error, ClientAuthenticationError):
        return BackendError(f"azure: {one_line(error.message or str(error))}")
    if isinstance(error, HttpResponseError):
        code = error.error.code if error.error is not None else None
        status = error.status_code or 0
        if code in TRANSIENT_CODES or status == 429 or status >= 500:
            return error
        message = error.error.message if error.error is not None and error.error.message else error.message
        return BackendError(f"azure: {code or status}: {one_line(message or str(error))}")
    return error


class AzureClients:
    def __init__(self, config: AzureBackendConfig) -> None:
        self.subscription = config.subscription_id
        self._config = config
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    def _credential(self) -> Any:
        config = self._config
        options: dict[str, Any] = {}
        if config.authority_url:
            # A private or sovereign cloud's identity platform, not a public one to discover.
            options.update(authority=config.authority_url, disable_instance_discovery=True)
        if isinstance(config.creds, ClientCreds):
            return ClientSecretCredential(
                config.creds.tenant_id or config.tenant_id,
                config.creds.client_id,
                config.creds.client_secret.get_secret_value(),
                **options,
            )
        return DefaultAzureCredential(**options)

    def _client(self, name: str, kind: Callable[..., C]) -> C:
        with self._lock:
            if name not in self._clients:
                if "credential" not in self._clients:
                    self._clients["credential"] = self._credential()
                options: dict[str, Any] = dict(NO_REDIRECTS)
                if self._config.endpoint_url:
                    endpoint = self._config.endpoint_url.rstrip("/")
                    options.update(base_url=endpoint, credential_scopes=[f"{endpoint}/.default"])
                self._clients[name] = kind(self._clients["credential"], self.subscription, **options)
            return cast(C, self._clients[name])

    @property
    def resources(self) -> ResourceManagementClient:
        return self._client("resources", ResourceManagementClient)

    @property
    def network(self) -> NetworkManagementClient:
        return self._client("network", NetworkManagementClient)

    @property
    def compute(self) -> ComputeManagementClient:
        return self._client("compute", ComputeManagementClient)
