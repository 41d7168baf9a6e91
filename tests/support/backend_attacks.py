"""Backend configurations a project admin might send: good inline ones, and attacks on the server
(files, commands, its own identity, internal addresses) with what the refusal must say."""

from __future__ import annotations

import json
from typing import Any

import yaml

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


# (configuration, what the refusal says)
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
    ("file:///proc/self/environ", "is not a plain http(s) URL"),
    ("https://34.90.1.2@127.0.0.1:50051", "is not a plain http(s) URL"),
    ("https://127.0.0.1:50051\\@34.90.1.2", "is not a plain http(s) URL"),
    ("https://34.90.1.2 @127.0.0.1", "is not a plain http(s) URL"),
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
