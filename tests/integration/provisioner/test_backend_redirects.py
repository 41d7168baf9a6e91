"""A cloud endpoint that answers with a redirect is not followed: a project's endpoint on a public
address could otherwise point the server's requests (and the project's secret or a gateway's Secret)
at an address only the server reaches. Each SDK is pointed at a redirector in front of a real fake of
its cloud, which must never hear a request. (boto3 and azure-identity follow none of their own.)"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from google.cloud import compute_v1
from requests.exceptions import TooManyRedirects
from urllib3.exceptions import MaxRetryError

from services.provisioner.backends.azure.clients import AzureClients
from services.provisioner.backends.gcp.clients import GcpClients
from services.provisioner.backends.kubernetes.driver import KubernetesDriver
from services.provisioner.credentials import AzureBackendConfig, GCPBackendConfig, KubernetesBackendConfig
from tests.fakes.azure_arm import CLIENT_ID, CLIENT_SECRET, SUBSCRIPTION, TENANT, FakeAzure
from tests.fakes.gcp_compute import FakeCompute
from tests.fakes.jsonhttp import Request, Response, Router, serving
from tests.fakes.kubernetes_api import FakeKubernetes
from tests.support.certs import self_signed


def redirector(target: str) -> Router:
    """Answers every request with 307 to the same path at `target` (the method and body are kept)."""
    router = Router()

    def moved(request: Request) -> Response:
        return Response(307, None, headers={"Location": f"{target}{request.path}"})

    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        router.route(method, ".*")(moved)
    return router


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    with FakeKubernetes().serve() as fake:
        yield fake


@pytest.fixture
def compute() -> Iterator[FakeCompute]:
    with FakeCompute().serve() as fake:
        yield fake


@pytest.fixture
def azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzure]:
    with FakeAzure().serve(tmp_path) as fake:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca_file))
        yield fake


def test_kubernetes_does_not_follow_a_redirect(cluster: FakeKubernetes) -> None:
    router = redirector(cluster.url)
    with serving(router) as url:
        kubeconfig = cluster.kubeconfig().replace(cluster.url, url)
        driver = KubernetesDriver(
            KubernetesBackendConfig.model_validate({"type": "kubernetes", "kubeconfig": {"data": kubeconfig}})
        )
        with pytest.raises(MaxRetryError, match="too many redirects"):
            driver.core.list_namespaced_secret("gatehouse")
    assert router.requests and not cluster.router.requests


def test_azure_does_not_follow_a_redirect(
    azure: FakeAzure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = redirector(azure.url)
    certificate, key = self_signed(tmp_path, "redirector")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    # Both certificates trusted, so the redirect itself would succeed where it is followed.
    assert azure.ca_file is not None
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(azure.ca_file.read_text() + certificate.read_text())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with serving(router, context) as url:
        config = AzureBackendConfig.model_validate(
            {
                "type": "azure",
                "subscription_id": SUBSCRIPTION,
                "tenant_id": TENANT,
                "creds": {"type": "client", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
                "endpoint_url": url,
                "authority_url": azure.url,
            }
        )
        with pytest.raises(HttpResponseError, match="Temporary Redirect"):
            AzureClients(config).resources.resource_groups.get("gatehouse-x")
    assert router.requests
    assert [path for _, path in azure.router.requests if path.startswith("/subscriptions")] == []


def test_gcp_does_not_follow_a_redirect(compute: FakeCompute) -> None:
    router = redirector(compute.url)
    with serving(router) as url:
        config = GCPBackendConfig.model_validate(
            {
                "type": "gcp",
                "project_id": compute.project,
                "creds": {"type": "service_account", "data": json.dumps(compute.credentials_info())},
                "endpoint_url": url,
            }
        )
        with pytest.raises(TooManyRedirects):
            list(GcpClients(config).client(compute_v1.RegionsClient).list(project=compute.project))
    assert router.requests and not compute.router.requests
