"""A project's backend configuration carries inline credentials and public endpoints only: every
way the cloud SDKs have of reading a server file, running a command, using the server's own
identity or reaching an address only the server reaches is refused in one line."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
import yaml

from services.common.backend_configs import BACKEND_CONFIG
from services.common.project_backends import Refused, check_project_backend, parse_networks

PUBLIC = "https://34.90.1.2"
SERVICE_ACCOUNT = {
    "type": "service_account",
    "project_id": "p",
    "private_key_id": "k",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n",
    "client_email": "gw@p.iam.gserviceaccount.com",
    "token_uri": "https://34.90.1.3/token",
}
KUBE_USER = {"token": "t0ken"}
KUBE_CLUSTER = {"server": PUBLIC, "certificate-authority-data": "Q0E="}


def kubeconfig(
    user: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None, **extra: Any
) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "clusters": [{"name": "c", "cluster": KUBE_CLUSTER if cluster is None else cluster}],
            "users": [{"name": "u", "user": KUBE_USER if user is None else user}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "gw"}}],
            "current-context": "x",
            **extra,
        }
    )


def kubernetes(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "kubernetes", "kubeconfig": {"data": text}, **extra}


def gcp(key: dict[str, Any] | str, **extra: Any) -> dict[str, Any]:
    data = key if isinstance(key, str) else json.dumps(key)
    return {"type": "gcp", "project_id": "p", "creds": {"type": "service_account", "data": data}, **extra}


AWS_KEYS = {"type": "access_key", "access_key": "AKIAEXAMPLE", "secret_key": "s3cr3t"}
AZURE_CLIENT = {"type": "client", "client_id": "app", "client_secret": "pw"}


def aws(**extra: Any) -> dict[str, Any]:
    return {"type": "aws", "creds": AWS_KEYS, **extra}


def azure(**extra: Any) -> dict[str, Any]:
    return {"type": "azure", "subscription_id": "s", "tenant_id": "t", "creds": AZURE_CLIENT, **extra}


async def check(raw: dict[str, Any], networks: str = "") -> None:
    await check_project_backend(BACKEND_CONFIG.validate_python(raw), raw, parse_networks(networks))


async def refusal(raw: dict[str, Any], networks: str = "") -> str:
    with pytest.raises(Refused) as refused:
        await check(raw, networks)
    message = str(refused.value)
    assert "\n" not in message
    return message


GOOD = [
    pytest.param(aws(), id="aws-access-key"),
    pytest.param(aws(endpoint_url=PUBLIC, vpc_name="gw"), id="aws-public-endpoint"),
    pytest.param(gcp(SERVICE_ACCOUNT), id="gcp-service-account"),
    pytest.param(gcp({k: v for k, v in SERVICE_ACCOUNT.items() if k != "token_uri"}), id="gcp-no-token-uri"),
    pytest.param(azure(authority_url="https://34.90.1.4/", endpoint_url=PUBLIC), id="azure-client"),
    pytest.param(kubernetes(kubeconfig()), id="kubernetes-token"),
    pytest.param(
        kubernetes(kubeconfig({"client-certificate-data": "Q0U=", "client-key-data": "S0VZ"})),
        id="kubernetes-client-certificate",
    ),
    pytest.param(
        kubernetes(kubeconfig(cluster={"server": PUBLIC, "insecure-skip-tls-verify": True})),
        id="kubernetes-insecure-is-the-projects-own-risk",
    ),
]


@pytest.mark.parametrize("raw", GOOD)
async def test_inline_credentials_and_public_endpoints_are_accepted(raw: dict[str, Any]) -> None:
    await check(raw)


FILES_AND_COMMANDS = [
    # Kubernetes: exec plugins and auth providers run commands; these keys name server files.
    (
        kubernetes(kubeconfig({"exec": {"command": "touch", "args": ["/tmp/x"], "apiVersion": "v1"}})),
        "kubeconfig.users[0].user.exec runs a command on the Gatehouse server",
    ),
    (
        kubernetes(kubeconfig({"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}})),
        "kubeconfig.users[0].user.auth-provider runs a command on the Gatehouse server",
    ),
    (
        kubernetes(kubeconfig({"tokenFile": "/proc/self/environ"})),
        "kubeconfig.users[0].user.tokenFile names a file on the Gatehouse server",
    ),
    (
        kubernetes(kubeconfig({"client-certificate": "/etc/passwd", "client-key-data": "S0VZ"})),
        "kubeconfig.users[0].user.client-certificate names a file on the Gatehouse server",
    ),
    (
        kubernetes(kubeconfig({"client-certificate-data": "Q0U=", "client-key": "/proc/self/environ"})),
        "kubeconfig.users[0].user.client-key names a file on the Gatehouse server",
    ),
    (
        kubernetes(kubeconfig(cluster={"server": PUBLIC, "certificate-authority": "/proc/self/environ"})),
        "kubeconfig.clusters[0].cluster.certificate-authority names a file on the Gatehouse server",
    ),
    (
        kubernetes(kubeconfig({"as": "system:admin"})),
        "kubeconfig.users[0].user.as is not an inline credential",
    ),
    (
        {"type": "kubernetes", "kubeconfig": {"filename": "/proc/self/environ"}},
        "kubeconfig.filename names a file on the Gatehouse server",
    ),
    # GCP: credentials other than a service account key exchange, read or run what they name.
    (
        gcp(
            {
                "type": "external_account",
                "audience": "a",
                "token_url": "https://sts.googleapis.com/v1/token",
                "credential_source": {"file": "/proc/self/environ"},
            }
        ),
        "creds.data.credential_source reads a file, runs a command or fetches a URL on the Gatehouse server",
    ),
    (
        gcp(
            {
                "type": "external_account",
                "audience": "a",
                "credential_source": {"executable": {"command": "touch /tmp/x"}},
            }
        ),
        "creds.data.credential_source reads a file, runs a command or fetches a URL on the Gatehouse server",
    ),
    (
        gcp(
            {
                "type": "external_account",
                "audience": "a",
                "credential_source": {"url": "http://169.254.169.254/"},
            }
        ),
        "creds.data.credential_source reads a file, runs a command or fetches a URL on the Gatehouse server",
    ),
    (
        gcp({"type": "impersonated_service_account", "source_credentials": {"type": "authorized_user"}}),
        "creds.data is a credential of type 'impersonated_service_account'",
    ),
    (
        gcp({"type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "r"}),
        "creds.data is a credential of type 'authorized_user'",
    ),
    (
        {"type": "gcp", "project_id": "p", "creds": {"type": "service_account", "filename": "/etc/key.json"}},
        "creds.filename names a file on the Gatehouse server",
    ),
    # AWS: shared-config keys that run a process or read a token file (the model would ignore them).
    (aws(credential_process="touch /tmp/x"), "credential_process runs a command on the Gatehouse server"),
    (
        aws(creds={**AWS_KEYS, "web_identity_token_file": "/proc/self/environ"}),
        "creds.web_identity_token_file names a file on the Gatehouse server",
    ),
    (
        aws(credential_source="Ec2InstanceMetadata"),
        "credential_source reads a file, runs a command or fetches a URL",
    ),
    (aws(profile="admin"), "profile names a profile of the Gatehouse server's own AWS configuration"),
    (aws(shared_credentials_file="/root/.aws/credentials"), "shared_credentials_file names a file"),
    # Azure: environment-style settings and certificate paths.
    (azure(AZURE_CLIENT_CERTIFICATE_PATH="/etc/cert.pem"), "AZURE_CLIENT_CERTIFICATE_PATH is a setting"),
    (
        azure(creds={**AZURE_CLIENT, "certificate_path": "/etc/cert.pem"}),
        "creds.certificate_path names a file on the Gatehouse server",
    ),
    (
        azure(federated_token_file="/var/run/token"),
        "federated_token_file names a file on the Gatehouse server",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), FILES_AND_COMMANDS)
async def test_what_reads_a_server_file_or_runs_a_command_is_refused(
    raw: dict[str, Any], expected: str
) -> None:
    message = await refusal(raw)
    assert message.startswith(f"{raw['type']} backend: ") and expected in message, message
    assert "refused in a project's configuration; give " in message


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "aws"},
        {"type": "aws", "creds": {"type": "default"}},
        {"type": "gcp", "project_id": "p"},
        {"type": "azure", "subscription_id": "s", "tenant_id": "t", "creds": {"type": "default"}},
    ],
)
async def test_the_servers_own_cloud_identity_is_refused(raw: dict[str, Any]) -> None:
    message = await refusal(raw)
    assert (
        "creds of type default (or none given) act with the Gatehouse server's own cloud identity" in message
    )
    assert message.startswith(f"{raw['type']} backend: creds ")


INTERNAL = [
    ("http://169.254.169.254/latest", "169.254.169.254 is link-local"),
    ("http://[fd00:ec2::254]/", "fd00:ec2::254 is link-local"),
    ("http://[::ffff:169.254.169.254]/", "is link-local"),
    (
        "http://metadata.google.internal/",
        "metadata.google.internal is the server itself or the cloud's metadata",
    ),
    ("https://localhost:50051", "localhost is the server itself"),
    ("https://127.0.0.1:50051", "127.0.0.1 is not a public address"),
    ("https://[::1]:50051", "::1 is not a public address"),
    ("https://[::ffff:127.0.0.1]:50051", "is not a public address"),
    ("http://2130706433:50051", "2130706433 (127.0.0.1) is not a public address"),
    ("https://0.0.0.0:50052", "0.0.0.0 is not a public address"),
    ("https://10.0.0.5", "10.0.0.5 is not a public address"),
    ("https://100.64.0.1", "100.64.0.1 is not a public address"),
    ("file:///proc/self/environ", "is not an http(s) URL with a host"),
]


def endpoint_configs(url: str) -> list[tuple[dict[str, Any], str]]:
    return [
        (aws(endpoint_url=url), "endpoint_url"),
        (gcp(SERVICE_ACCOUNT, endpoint_url=url), "endpoint_url"),
        (gcp({**SERVICE_ACCOUNT, "token_uri": url}), "creds.data token_uri"),
        (azure(endpoint_url=url), "endpoint_url"),
        (azure(authority_url=url), "authority_url"),
        (kubernetes(kubeconfig(), endpoint_url=url), "endpoint_url"),
        (kubernetes(kubeconfig(cluster={"server": url})), "kubeconfig.clusters[0].cluster.server"),
        (kubernetes(kubeconfig(cluster={**KUBE_CLUSTER, "proxy-url": url})), "clusters[0].cluster.proxy-url"),
    ]


@pytest.mark.parametrize(("url", "expected"), INTERNAL)
async def test_endpoints_the_server_alone_reaches_are_refused_in_every_backend(
    url: str, expected: str
) -> None:
    for raw, where in endpoint_configs(url):
        message = await refusal(raw)
        assert message.startswith(f"{raw['type']} backend: ") and where in message and expected in message, (
            message
        )


async def test_networks_the_operator_allows_are_reachable_but_metadata_never() -> None:
    await check(aws(endpoint_url="http://10.1.2.3:5000"), networks="10.0.0.0/8")
    await check(kubernetes(kubeconfig(cluster={"server": "https://127.0.0.1:6443"})), networks="127.0.0.0/8")
    assert "10.1.2.3 is not a public address" in await refusal(
        aws(endpoint_url="http://10.1.2.3"), "192.168.0.0/16"
    )
    message = await refusal(aws(endpoint_url="http://169.254.169.254/"), networks="169.254.0.0/16")
    assert "is link-local" in message
    message = await refusal(aws(endpoint_url="http://[fd00:ec2::254]/"), networks="fd00::/8")
    assert "is link-local" in message


async def test_bad_key_material_is_one_line() -> None:
    assert await refusal(gcp("{not json")) == "gcp backend: creds.data: the service account key is not JSON"
    assert "kubeconfig.data is not YAML" in await refusal(kubernetes("a: [1,"))
    assert "is not a kubeconfig" in await refusal(kubernetes("just text"))


def test_networks_are_parsed_or_named_in_the_error() -> None:
    assert parse_networks("10.0.0.0/8, fd00::/8,") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    with pytest.raises(ValueError, match="'ten' is not a network"):
        parse_networks("10.0.0.0/8,ten")
