"""A project's backend configuration carries inline credentials and public endpoints only: every
way the cloud SDKs have of reading a server file, running a command, using the server's own
identity or reaching an address only the server reaches is refused in one line."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from services.common.backend_configs import BACKEND_CONFIG
from services.common.project_backends import Refused, check_project_backend, parse_networks
from services.common.settings import Settings
from tests.support.backend_attacks import (
    FILES_AND_COMMANDS,
    INTERNAL,
    PUBLIC,
    SERVICE_ACCOUNT,
    aws,
    azure,
    endpoint_configs,
    gcp,
    kubeconfig,
    kubernetes,
)


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
    assert "is link-local or the cloud's metadata service" in message
    message = await refusal(aws(endpoint_url="http://100.100.100.200/"), networks="100.64.0.0/10")
    assert "is link-local or the cloud's metadata service" in message


async def test_a_service_account_keys_universe_is_an_endpoint_too() -> None:
    message = await refusal(gcp({**SERVICE_ACCOUNT, "universe_domain": "localhost"}))
    assert message.startswith(
        "gcp backend: creds.data universe_domain compute.localhost is the server itself"
    )
    message = await refusal(gcp({**SERVICE_ACCOUNT, "universe_domain": "169.254.169.254.nip.io"}))
    assert "creds.data universe_domain compute.169.254.169.254.nip.io" in message


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


def test_the_operators_networks_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_PROJECT_BACKEND_NETWORKS", "10.0.0.0/8,127.0.0.1/32")
    assert Settings.from_env().project_backend_networks == parse_networks("10.0.0.0/8,127.0.0.1")
    monkeypatch.setenv("GATEHOUSE_PROJECT_BACKEND_NETWORKS", "10.0.0.0/8,ten")
    with pytest.raises(
        SystemExit, match=r"^error: GATEHOUSE_PROJECT_BACKEND_NETWORKS: 'ten' is not a network"
    ):
        Settings.from_env()
    monkeypatch.delenv("GATEHOUSE_PROJECT_BACKEND_NETWORKS")
    assert Settings.from_env().project_backend_networks == ()
