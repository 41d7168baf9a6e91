"""How a project's cloud backends are configured (dstack's format), shared by the provisioner that
uses them and the registry that stores them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DefaultCreds(_Model):
    """The SDK's own chain: environment, instance role / metadata server, CLI login."""

    type: Literal["default"]


DEFAULT_CREDS = DefaultCreds(type="default")


class AccessKeyCreds(_Model):
    type: Literal["access_key"]
    access_key: str
    secret_key: SecretStr


class FileOrData(_Model):
    filename: str | None = None
    data: SecretStr | None = None


class ServiceAccountCreds(FileOrData):
    type: Literal["service_account"]


class ClientCreds(_Model):
    type: Literal["client"]
    client_id: str
    client_secret: SecretStr
    tenant_id: str | None = None


class AWSBackendConfig(_Model):
    type: Literal["aws"]
    creds: Annotated[AccessKeyCreds | DefaultCreds, Field(discriminator="type")] = DEFAULT_CREDS
    endpoint_url: str | None = None
    # The VPC to use: by name (tag Name) everywhere, or by id per region; the default VPC otherwise.
    vpc_name: str | None = None
    vpc_ids: dict[str, str] | None = None


class GCPBackendConfig(_Model):
    type: Literal["gcp"]
    project_id: str
    creds: Annotated[ServiceAccountCreds | DefaultCreds, Field(discriminator="type")] = DEFAULT_CREDS
    endpoint_url: str | None = None
    vpc_name: str = "default"
    # Region → the subnetwork of `vpc_name` hosts there get (as in dstack). Needed for a custom-mode
    # network; an auto-mode network (like `default`) picks its own subnetwork in a region without one.
    subnetworks: dict[str, str] | None = None


class AzureBackendConfig(_Model):
    type: Literal["azure"]
    subscription_id: str
    tenant_id: str
    creds: Annotated[ClientCreds | DefaultCreds, Field(discriminator="type")] = DEFAULT_CREDS
    # Resource Manager and the identity authority, for sovereign and private clouds and emulators.
    endpoint_url: str | None = None
    authority_url: str | None = None


class KubernetesBackendConfig(_Model):
    type: Literal["kubernetes"]
    kubeconfig: FileOrData
    # Overrides the kubeconfig's server address.
    endpoint_url: str | None = None
    # Where every gateway's objects go (it must exist; a Role there is all the credentials need);
    # otherwise the kubeconfig context's namespace, else `default`.
    namespace: str | None = None


BackendConfig = Annotated[
    AWSBackendConfig | GCPBackendConfig | AzureBackendConfig | KubernetesBackendConfig,
    Field(discriminator="type"),
]
BACKEND_CONFIG = TypeAdapter(BackendConfig)
CLOUD_BACKENDS = ("aws", "gcp", "azure", "kubernetes")


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """The path to the error as the user wrote it, without the discriminated unions' tags."""
    parts: list[str] = []
    for part in loc:
        if isinstance(data, dict) and part not in data and part == data.get("type"):
            continue
        parts.append(str(part))
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            data = None
    return ".".join(parts)


def one_line(error: ValidationError, where: str, data: Any) -> str:
    first = error.errors()[0]
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {_location(first['loc'], data)}: {first['msg']}{more}"
