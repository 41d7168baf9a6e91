"""Cloud hosts get their own join token and a bootstrap that connects with the certificate it buys."""

from pathlib import Path

from gatehouse.v1 import resources_pb2
from services.common.internal_ca import InternalCA
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.hosts.plan import XdsEndpoint
from services.provisioner.hosts.startup import CLIENT_CERTIFICATE_PATH, JoinEndpoint
from services.provisioner.join import JoinSetup, JoinTokens


def test_each_host_gets_its_own_token_and_an_mtls_bootstrap(tmp_path: Path) -> None:
    tokens = JoinTokens(tmp_path / "join-tokens.json")
    endpoint = JoinEndpoint(
        "https://xds.example.com:50053/v1/join", InternalCA.create().certificate_pem.decode()
    )
    backend = CloudGatewayBackend(
        "aws",
        driver=None,  # type: ignore[arg-type]
        xds=XdsEndpoint("xds.example.com", 50052),
        join=JoinSetup(tokens, endpoint),
    )
    spec = resources_pb2.GatewaySpec(backend="aws", region="eu-west-1", replicas=2)
    plan = backend.plan(resources_pb2.Gateway(id="gw-join", project="main", name="join", spec=spec))
    first, second = plan.startup_script(0), plan.startup_script(1)
    assert endpoint.url in first and CLIENT_CERTIFICATE_PATH in first
    token_of = [script.split("<<'GATEHOUSE_JOIN_TOKEN'\n")[1].split("\n")[0] for script in (first, second)]
    assert token_of[0] != token_of[1]
    assert tokens.redeem(token_of[1]).host_index == 1
    cluster = plan.bootstrap(0)["static_resources"]["clusters"][0]
    assert "transport_socket" in cluster
