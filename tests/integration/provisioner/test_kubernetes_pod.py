"""A Kubernetes gateway's pod, played here from the manifests the backend sent the (fake) cluster:
its Secret's files under a scratch root, its init container's command joining at a real join
endpoint, a real Envoy started with its Envoy container's arguments reaching LIVE against a real
gateway_xds over mTLS, and its sidecar's command renewing the certificate, which Envoy takes without
a restart and presents when it connects again."""

from __future__ import annotations

import asyncio
import base64
import datetime
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from services.common.internal_ca import InternalCA
from services.common.probes import http_get
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.backends.kubernetes.driver import KubernetesDriver
from services.provisioner.credentials import KubernetesBackendConfig
from services.provisioner.hosts.identity import CONFIG_DIR
from services.provisioner.hosts.plan import XdsEndpoint
from services.provisioner.join import JoinSetup
from tests.fakes.kubernetes_api import FakeKubernetes
from tests.integration.provisioner.harness import converge, gateway
from tests.integration.provisioner.hostsim import (
    ControlPlane,
    HostEnvoy,
    certificate_of,
    control_plane,
    in_root_argv,
    publish_listener,
    relocate,
    run_on_host,
    wait_acked,
)

pytestmark = pytest.mark.real

GATEWAY_ID = "gw-0000pod00001"
NAMESPACE = "gatehouse"  # the fake cluster's namespace where the provisioner has its Role
NODE_ID = f"gateway/{GATEWAY_ID}/0"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    # Certificates of two minutes (back-dated five): renewal is due as soon as one is issued.
    async with control_plane(
        tmp_path, InternalCA.create(leaf_validity=datetime.timedelta(minutes=2))
    ) as plane:
        yield plane


async def pod_of(plane: ControlPlane) -> tuple[dict[str, str], dict[str, Any]]:
    """The pod's Secret files and pod spec, as the backend created them in the cluster."""
    with FakeKubernetes().serve() as cluster:
        config = KubernetesBackendConfig.model_validate(
            {"type": "kubernetes", "kubeconfig": {"data": cluster.kubeconfig()}, "namespace": NAMESPACE}
        )
        backend = CloudGatewayBackend(
            "kubernetes",
            KubernetesDriver(config),
            XdsEndpoint("127.0.0.1", plane.port),
            join=JoinSetup(plane.tokens, plane.join),
        )
        await converge(backend, gateway("kubernetes", "any", GATEWAY_ID))
        [secret] = cluster.of("secrets", NAMESPACE)
        [deployment] = cluster.of("deployments", NAMESPACE)
    files = {name: base64.b64decode(value).decode() for name, value in secret["data"].items()}
    return files, deployment["spec"]["template"]["spec"]


def mount_secret(root: Path, files: dict[str, str]) -> None:
    """The Secret volume at CONFIG_DIR."""
    directory = root / CONFIG_DIR.lstrip("/")
    directory.mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_text(content)


async def serials_held(envoy: HostEnvoy, serial: int) -> None:
    while serial not in await envoy.client_serials():
        await asyncio.sleep(0.1)


async def test_the_pod_joins_connects_over_mtls_and_renews_without_a_restart(
    tmp_path: Path, plane: ControlPlane
) -> None:
    files, pod = await pod_of(plane)
    [init] = pod["initContainers"]
    envoy_container, renew_container = pod["containers"]
    root = tmp_path / "pod"
    mount_secret(root, files)

    # The init container: the Secret's token becomes a key and certificate in the emptyDir.
    code, stderr = await run_on_host(root, init["command"])
    assert code == 0, stderr
    joined = certificate_of(root)
    assert joined.subject.rfc4514_string() == f"CN={GATEWAY_ID}"
    # The token was used: a pod made again needs the new one the backend puts in the Secret.
    assert not plane.tokens.is_live(files["join-token"])

    # Envoy, with the Envoy container's arguments, over mTLS with that certificate.
    relocate(root)
    listener_port = publish_listener(plane, GATEWAY_ID, revision=7)
    envoy = HostEnvoy(root, envoy_container["args"], tmp_path / "envoy.log")
    sidecar: asyncio.subprocess.Process | None = None
    try:
        await wait_acked(plane, NODE_ID, 7, envoy)
        async with asyncio.timeout(10):
            await envoy.wait_live()
            await serials_held(envoy, joined.serial_number)
        assert (await http_get("127.0.0.1", listener_port, "/"))[0] == 404
        assert plane.authorizer.serials[-1] == joined.serial_number

        # The sidecar renews (due at once here) into the emptyDir; Envoy takes the new file by itself.
        sidecar = await asyncio.create_subprocess_exec(
            *in_root_argv(root, renew_container["command"]),
            env={"PATH": "/usr/bin:/bin", "GATEHOUSE_ROOT": str(root), "GATEHOUSE_RENEW_INTERVAL": "1"},
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(15):
            while certificate_of(root).serial_number == joined.serial_number:
                await asyncio.sleep(0.1)
        sidecar.send_signal(signal.SIGTERM)
        _, sidecar_log = await sidecar.communicate()
        assert sidecar.returncode == 0 and b"renewed" in sidecar_log, sidecar_log
        renewed = certificate_of(root)
        async with asyncio.timeout(10):
            await serials_held(envoy, renewed.serial_number)
        assert joined.serial_number not in await envoy.client_serials()

        # gateway_xds restarts: Envoy, never restarted, connects with the renewed certificate.
        await plane.restart_xds()
        publish_listener(plane, GATEWAY_ID, revision=8)
        await wait_acked(plane, NODE_ID, 8, envoy)
        assert plane.authorizer.serials[-1] == renewed.serial_number
        assert envoy.process.poll() is None
    finally:
        if sidecar is not None and sidecar.returncode is None:
            sidecar.kill()
            await sidecar.wait()
        envoy.stop()
