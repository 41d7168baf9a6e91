"""Gateway hosts get their own join token and a bootstrap that connects with the certificate it buys
and renews; hosts are replaced when the way they join changes."""

import dataclasses
import json
from pathlib import Path

import pytest

from gatehouse.v1 import resources_pb2
from services.common.internal_ca import InternalCA
from services.common.settings import DEFAULT_JOIN_PORT, Settings
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.hosts.identity import (
    IDENTITY_PATH,
    JOIN_SCRIPT_PATH,
    JOIN_TOKEN_PATH,
    SDS_PATH,
    JoinEndpoint,
)
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from services.provisioner.hosts.startup import unpack_startup_script
from services.provisioner.join import JoinSetup, JoinTokens
from tests.support.join_tokens import local_join_tokens
from tests.support.no_cloud import NoCloud

ENDPOINT = JoinEndpoint("https://xds.example.com:50055", InternalCA.create().certificate_pem.decode())


def plan(tmp_path: Path, replicas: int = 2) -> tuple[GatewayPlan, JoinTokens]:
    tokens = local_join_tokens()
    backend = CloudGatewayBackend(
        "aws",
        driver=NoCloud(),
        xds=XdsEndpoint("xds.example.com", 50052),
        join=JoinSetup(tokens, ENDPOINT),
    )
    spec = resources_pb2.GatewaySpec(backend="aws", region="eu-west-1", replicas=replicas)
    return backend.plan(resources_pb2.Gateway(id="gw-join", project="main", name="join", spec=spec)), tokens


async def test_each_host_gets_its_own_token_and_an_mtls_bootstrap(tmp_path: Path) -> None:
    gateway_plan, tokens = plan(tmp_path)
    first, second = (unpack_startup_script(gateway_plan.startup_script(index)) for index in (0, 1))
    assert ENDPOINT.url in first and JOIN_SCRIPT_PATH in first
    token_of = [
        script.split(f"\"$root{JOIN_TOKEN_PATH}\" <<'GATEHOUSE_FILE'\n")[1].split("\n")[0]
        for script in (first, second)
    ]
    assert token_of[0] != token_of[1]
    assert (await tokens.redeem(token_of[1])).host_index == 1
    transport = gateway_plan.bootstrap(0)["static_resources"]["clusters"][0]["transport_socket"]
    [sds] = transport["typed_config"]["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert sds["sds_config"]["path_config_source"]["path"] == SDS_PATH


def test_the_sds_file_names_the_one_file_join_sh_keeps_current(tmp_path: Path) -> None:
    gateway_plan, _ = plan(tmp_path)
    [sds_file] = [file for file in gateway_plan.host_files(0, None) if file.path == SDS_PATH]
    [secret] = json.loads(sds_file.content)["resources"]
    assert secret["tls_certificate"] == {
        "certificate_chain": {"filename": IDENTITY_PATH},
        "private_key": {"filename": IDENTITY_PATH},
    }
    assert not [file for file in gateway_plan.host_files(0, None) if file.path == JOIN_TOKEN_PATH]
    assert [file.private for file in gateway_plan.host_files(0, "t") if file.path == JOIN_TOKEN_PATH] == [
        True
    ]


def test_hosts_are_replaced_when_the_join_endpoint_moves_or_mtls_comes(tmp_path: Path) -> None:
    gateway_plan, _ = plan(tmp_path)
    joining = gateway_plan.host_fingerprint("t3.micro")
    moved = dataclasses.replace(gateway_plan, join=dataclasses.replace(ENDPOINT, url="https://xds:1"))
    assert moved.host_fingerprint("t3.micro") != joining
    plain = dataclasses.replace(gateway_plan, join=None)
    assert plain.host_fingerprint("t3.micro") != joining
    # The bootstrap alone, no token.
    assert unpack_startup_script(plain.startup_script(0)).count("GATEHOUSE_FILE") == 2


def test_the_join_port_is_fixed_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEHOUSE_JOIN_PORT", raising=False)
    assert Settings.from_env().join_port == DEFAULT_JOIN_PORT == 50055
    monkeypatch.setenv("GATEHOUSE_JOIN_PORT", "0")
    assert Settings.from_env().join_port == 0
