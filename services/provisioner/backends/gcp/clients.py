"""google-cloud-compute clients for one backend configuration, operation waiting, and GCP errors in
the user's terms."""

from __future__ import annotations

import json
import re
import threading
from typing import Any, TypeVar, cast

import google.auth
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exceptions
from google.cloud import compute_v1
from google.oauth2 import service_account

from services.provisioner.backends.base import BackendError, NotReady
from services.provisioner.credentials import GCPBackendConfig, ServiceAccountCreds, read_file_or_data

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
# An operation still running after this many waits (each up to two minutes) is looked at next pass.
MAX_WAITS = 3
# Operation errors worth trying again rather than failing the gateway.
TRANSIENT_OPERATION_ERRORS = frozenset({"INTERNAL_ERROR", "RESOURCE_NOT_READY", "RATE_LIMIT_EXCEEDED"})

C = TypeVar("C")


class OperationError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def one_line(text: str) -> str:
    return " ".join(text.split())


def translate(error: Exception) -> Exception:
    if isinstance(error, auth_exceptions.RefreshError | auth_exceptions.DefaultCredentialsError):
        return BackendError(f"gcp: {one_line(str(error))}")
    if isinstance(error, OperationError) and error.code not in TRANSIENT_OPERATION_ERRORS:
        return BackendError(f"gcp: {error.code}: {one_line(error.message)}")
    if isinstance(error, api_exceptions.GoogleAPICallError) and error.code in (400, 401, 403, 404):
        # The REST transport prefixes the cloud's message with the request ("GET https://…: ").
        message = re.sub(r"^[A-Z]+ \S+: ", "", error.message or str(error))
        return BackendError(f"gcp: {one_line(message)}")
    return error


def label_value(value: str) -> str:
    """GCP label values: lowercase letters, digits, `_` and `-`, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", value.lower())[:63]


def labels(tags: dict[str, str]) -> dict[str, str]:
    result = {}
    for key, value in tags.items():
        clean = label_value(key)
        if clean and clean[0].isalpha():
            result[clean] = label_value(value)
    return result


def follow_no_redirects(client: Any) -> None:
    """Compute Engine answering with a redirect is not followed (requests follows up to 30): it could
    point the server's requests at an address only the server reaches. The REST transport's session
    and the one it fetches tokens with are requests sessions; neither is offered by a public name."""
    session = client.transport._session
    for each in (session, getattr(session, "_auth_request_session", None)):
        if each is not None:
            each.max_redirects = 0


class GcpClients:
    def __init__(self, config: GCPBackendConfig) -> None:
        self.project = config.project_id
        self._config = config
        self._credentials: Any = None
        self._clients: dict[type[Any], Any] = {}
        self._lock = threading.Lock()

    def _load_credentials(self) -> Any:
        if isinstance(self._config.creds, ServiceAccountCreds):
            raw = read_file_or_data(self._config.creds, "gcp service account")
            try:
                info = json.loads(raw)
            except ValueError:
                raise BackendError("gcp: the service account key is not JSON") from None
            return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
        credentials, _ = google.auth.default(scopes=SCOPES)
        return credentials

    def client(self, kind: type[C]) -> C:
        with self._lock:
            if kind not in self._clients:
                if self._credentials is None:
                    self._credentials = self._load_credentials()
                # The credentials' universe (googleapis.com, or a sovereign cloud's) is the client's.
                options = ClientOptions(
                    api_endpoint=self._config.endpoint_url,
                    universe_domain=getattr(self._credentials, "universe_domain", None),
                )
                made = kind(credentials=self._credentials, client_options=options)  # type: ignore[call-arg]
                follow_no_redirects(made)
                self._clients[kind] = made
            return cast(C, self._clients[kind])

    def wait(self, operation: compute_v1.Operation) -> None:
        """Polls an operation with operations clients on our endpoint (an SDK operation's own
        `.result()` would poll the public endpoint); raises OperationError when it failed."""
        for _ in range(MAX_WAITS):
            if operation.status == compute_v1.Operation.Status.DONE:
                break
            name = operation.name
            if operation.zone:
                zone = operation.zone.rsplit("/", 1)[-1]
                operation = self.client(compute_v1.ZoneOperationsClient).wait(
                    project=self.project, zone=zone, operation=name
                )
            elif operation.region:
                region = operation.region.rsplit("/", 1)[-1]
                operation = self.client(compute_v1.RegionOperationsClient).wait(
                    project=self.project, region=region, operation=name
                )
            else:
                operation = self.client(compute_v1.GlobalOperationsClient).wait(
                    project=self.project, operation=name
                )
        else:
            if operation.status != compute_v1.Operation.Status.DONE:
                raise NotReady(
                    f"waiting for {operation.operation_type} of {operation.target_link.rsplit('/', 1)[-1]}"
                )
        if operation.error and operation.error.errors:
            first = operation.error.errors[0]
            raise OperationError(first.code, first.message)
