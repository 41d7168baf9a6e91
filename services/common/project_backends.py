"""What a project may put in a backend configuration (`gatehouse backend add`): inline credentials
only, and endpoints on public addresses.

A project's configuration comes from its admin, not from the operator: it must never make the server
read one of its own files, run a command, act with the server's own cloud identity, or send requests
to addresses only the server reaches (loopback, its private networks, the cloud metadata service).
The registry checks a configuration before storing it and the provisioner again before using one,
so a configuration stored before these rules is refused too. The operator's configuration
(`server/config.yml`, the environment) is trusted: files, commands and ambient identities stay
allowed there.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from services.common.addresses import (
    CLOUD_METADATA,
    Address,
    Network,
    is_metadata_name,
    resolve_in_time,
    unwrapped,
)
from services.common.backend_configs import (
    AWSBackendConfig,
    AzureBackendConfig,
    BackendConfig,
    DefaultCreds,
    FileOrData,
    GCPBackendConfig,
    KubernetesBackendConfig,
)

# What to give instead, per backend.
INSTEAD = {
    "aws": "give `creds: {type: access_key, access_key: …, secret_key: …}`",
    "gcp": "give `creds: {type: service_account, data: <the service account key's JSON>}`",
    "azure": "give `creds: {type: client, client_id: …, client_secret: …}`",
    "kubernetes": (
        "give `kubeconfig: {data: …}` whose user has a `token` or `client-certificate-data` and "
        "`client-key-data`, and whose cluster has `certificate-authority-data`"
    ),
}

# Keys that make an SDK run a command or read a file of the machine it runs on (AWS shared config,
# Azure and Google environment-style settings, kubeconfig). A project's configuration is matched
# against them at any depth, so a key the model would ignore today is refused rather than trusted.
RUNS = "runs a command on the Gatehouse server"
READS = "names a file on the Gatehouse server"
SERVER_SIDE = {
    "credential_process": RUNS,
    "exec": RUNS,
    "auth-provider": RUNS,
    "executable": RUNS,
    "command": RUNS,
    "cmd-path": RUNS,
    "credential_source": "reads a file, runs a command or fetches a URL on the Gatehouse server",
    "profile": "names a profile of the Gatehouse server's own AWS configuration",
    "source_profile": "names a profile of the Gatehouse server's own AWS configuration",
    **dict.fromkeys(
        (
            "filename",
            "file",
            "web_identity_token_file",
            "shared_credentials_file",
            "config_file",
            "tokenfile",
            "token_file",
            "client-certificate",
            "client-key",
            "certificate-authority",
            "idp-certificate-authority",
            "certificate_path",
            "client_certificate_path",
            "federated_token_file",
        ),
        READS,
    ),
}
ENVIRONMENT_PREFIXES = ("aws_", "azure_", "google_", "gcloud_", "gatehouse_")

# A kubeconfig's user and cluster entries: the inline keys a project may give (`extensions` is
# metadata no client acts on).
KUBE_USER_KEYS = frozenset(
    {"token", "client-certificate-data", "client-key-data", "username", "password", "extensions"}
)
KUBE_CLUSTER_KEYS = frozenset(
    {
        "server",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "proxy-url",
        "extensions",
    }
)


class Refused(ValueError):
    """A project's backend configuration asks for what only the operator may: one line."""


def _refuse(kind: str, where: str, what: str) -> Refused:
    return Refused(f"{kind} backend: {where} {what}: refused in a project's configuration; {INSTEAD[kind]}")


def _keys(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every key of nested mappings and lists, with the path to it."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            yield str(key), where
            yield from _keys(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _keys(item, f"{path}[{index}]")


def _refuse_keys(kind: str, raw: Any, prefix: str = "") -> None:
    for key, where in _keys(raw, prefix):
        name = key.lower()
        if name in SERVER_SIDE:
            raise _refuse(kind, where, SERVER_SIDE[name])
        if name.startswith(ENVIRONMENT_PREFIXES):
            raise _refuse(kind, where, "is a setting of the Gatehouse server's environment")


def _inline(kind: str, where: str, value: FileOrData) -> str:
    if value.filename is not None:
        raise _refuse(kind, f"{where}.filename", READS)
    if value.data is None:
        raise Refused(f"{kind} backend: {where}: set `data` (the content itself)")
    return value.data.get_secret_value()


def _refuse_default(kind: str, creds: Any) -> None:
    if isinstance(creds, DefaultCreds):
        raise _refuse(
            kind,
            "creds",
            "of type default (or none given) act with the Gatehouse server's own cloud identity",
        )


def _gcp_key(raw: str) -> list[tuple[str, str]]:
    """The URLs a service account key makes the server call (its token URL, and Compute Engine in
    its universe); other credential types (external and impersonated accounts, user logins) fetch,
    read or run what they name."""
    try:
        key = json.loads(raw)
    except ValueError:
        raise Refused("gcp backend: creds.data: the service account key is not JSON") from None
    if not isinstance(key, dict):
        raise Refused("gcp backend: creds.data: the service account key is not a JSON object")
    _refuse_keys("gcp", key, "creds.data")
    kind = key.get("type")
    if kind != "service_account":
        raise _refuse(
            "gcp",
            "creds.data",
            f"is a credential of type {kind!r}, which the server would exchange, read or run",
        )
    urls = []
    if key.get("token_uri"):
        urls.append(("creds.data token_uri", str(key["token_uri"])))
    if key.get("universe_domain"):
        urls.append(("creds.data universe_domain", f"https://compute.{key['universe_domain']}"))
    return urls


def _kubeconfig(raw: str) -> list[tuple[str, str]]:
    try:
        kubeconfig = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise Refused(
            f"kubernetes backend: kubeconfig.data is not YAML: {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(kubeconfig, dict):
        raise Refused("kubernetes backend: kubeconfig.data is not a kubeconfig (a YAML mapping)")
    _refuse_keys("kubernetes", kubeconfig, "kubeconfig")
    urls: list[tuple[str, str]] = []
    for section, entry_key, allowed in (
        ("users", "user", KUBE_USER_KEYS),
        ("clusters", "cluster", KUBE_CLUSTER_KEYS),
    ):
        for index, entry in enumerate(kubeconfig.get(section) or []):
            settings = entry.get(entry_key) if isinstance(entry, dict) else None
            where = f"kubeconfig.{section}[{index}].{entry_key}"
            if not isinstance(settings, dict):
                continue
            for key in settings:
                if key not in allowed:
                    raise _refuse("kubernetes", f"{where}.{key}", "is not an inline credential")
            for key in ("server", "proxy-url"):
                if settings.get(key):
                    urls.append((f"{where}.{key}", str(settings[key])))
    return urls


def _urls(config: BackendConfig) -> list[tuple[str, str]]:
    """Refuses what is not inline; returns the URLs the configuration makes the server reach."""
    kind = config.type
    urls = [("endpoint_url", config.endpoint_url)] if config.endpoint_url else []
    if isinstance(config, AWSBackendConfig | AzureBackendConfig):
        _refuse_default(kind, config.creds)
    if isinstance(config, AzureBackendConfig) and config.authority_url:
        urls.append(("authority_url", config.authority_url))
    if isinstance(config, GCPBackendConfig):
        _refuse_default(kind, config.creds)
        assert not isinstance(config.creds, DefaultCreds)
        urls += _gcp_key(_inline(kind, "creds", config.creds))
    if isinstance(config, KubernetesBackendConfig):
        urls += _kubeconfig(_inline(kind, "kubeconfig", config.kubeconfig))
    return urls


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated networks (CIDR); ValueError names the one that is not."""
    networks = []
    for part in text.replace(" ", "").split(","):
        if part:
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"{part!r} is not a network (like 10.20.0.0/16)") from None
    return tuple(networks)


def refused_address(address: Address, allowed: Sequence[Network]) -> str | None:
    """Why a project's endpoint may not be at `address`; None when it may."""
    address = unwrapped(address)
    if address in CLOUD_METADATA or address.is_link_local:
        return "is link-local or the cloud's metadata service"
    if any(address.version == network.version and address in network for network in allowed):
        return None
    if not address.is_global:
        return "is not a public address (loopback, private or reserved)"
    return None


async def _check_url(kind: str, where: str, url: str, allowed: Sequence[Network]) -> None:
    try:
        parts = urlsplit(url)
        scheme, netloc, host = parts.scheme, parts.netloc, parts.hostname
    except ValueError:
        scheme, netloc, host = "", "", None
    # User info and odd characters are where URL parsers disagree about the host.
    odd = "@" in netloc or any(char in url for char in "\\ \t\r\n")
    if scheme not in ("http", "https") or not host or odd:
        raise Refused(
            f"{kind} backend: {where} {url!r} is not a plain http(s) URL (scheme://host[:port]/path)"
        )
    name = host.rstrip(".").lower()
    if is_metadata_name(name) or name == "localhost" or name.endswith(".localhost"):
        raise Refused(
            f"{kind} backend: {where} {host} is the server itself or the cloud's metadata service: "
            "refused in a project's configuration; give the public address of the cloud's endpoint"
        )
    addresses = await resolve_in_time(host)
    if not addresses:
        raise Refused(
            f"{kind} backend: {where} {host} does not resolve: give an address the server can reach"
        )
    for address in addresses:
        reason = refused_address(address, allowed)
        if reason is not None:
            shown = host if str(address) == host else f"{host} ({address})"
            raise Refused(
                f"{kind} backend: {where} {shown} {reason}: refused in a project's configuration; "
                "give the public address of the cloud's endpoint (the operator may allow private "
                "networks with GATEHOUSE_PROJECT_BACKEND_NETWORKS)"
            )


async def check_project_backend(
    config: BackendConfig, raw: dict[str, Any], allowed: Sequence[Network]
) -> None:
    """Raises Refused (one line) unless the project's configuration `raw` (validated as `config`)
    carries only inline credentials and reaches only public addresses or `allowed` networks."""
    _refuse_keys(config.type, raw)
    for where, url in _urls(config):
        await _check_url(config.type, where, url, allowed)
