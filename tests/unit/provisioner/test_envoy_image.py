"""Envoy on gateway hosts is pinned: an exact version, a digest when configured, one setting shared
by VM hosts and Kubernetes pods, and a registry mirror for VM hosts."""

from __future__ import annotations

import pytest

from gatehouse.v1 import resources_pb2
from services.common.settings import Settings
from services.provisioner.app import host_envoy
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.backends.kubernetes import manifests
from services.provisioner.hosts.plan import XdsEndpoint
from services.provisioner.hosts.startup import (
    DEFAULT_REGISTRY_MIRROR,
    ENVOY_IMAGE,
    envoy_image,
    unpack_startup_script,
)
from tests.support.no_cloud import NoCloud

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_the_default_is_the_release_the_tests_run_fully_qualified() -> None:
    assert ENVOY_IMAGE == "docker.io/envoyproxy/envoy:v1.40.0"
    assert envoy_image() == ENVOY_IMAGE
    assert envoy_image("", DIGEST) == f"{ENVOY_IMAGE}@{DIGEST}"


@pytest.mark.parametrize(
    ("image", "digest", "refused"),
    [
        ("envoyproxy/envoy:v1.40-latest", "", "names no exact version"),
        ("envoyproxy/envoy", "", "names no exact version"),
        ("registry.internal:5000/envoy", "", "names no exact version"),
        ("envoyproxy/envoy:latest", "", "names no exact version"),
        ("", "sha256:abc", "not sha256:<64 hex digits>"),
        (f"envoyproxy/envoy@{DIGEST}", DIGEST, "names a digest already"),
    ],
)
def test_a_reference_that_floats_is_refused(image: str, digest: str, refused: str) -> None:
    with pytest.raises(ValueError, match=refused):
        envoy_image(image, digest)


def test_settings_pick_the_image_the_digest_and_the_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEHOUSE_ENVOY_IMAGE", "GATEHOUSE_ENVOY_IMAGE_DIGEST", "GATEHOUSE_ENVOY_REGISTRY_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    assert host_envoy(Settings.from_env()) == (ENVOY_IMAGE, DEFAULT_REGISTRY_MIRROR)
    monkeypatch.setenv("GATEHOUSE_ENVOY_IMAGE", "registry.internal:5000/envoy:v1.40.0")
    monkeypatch.setenv("GATEHOUSE_ENVOY_IMAGE_DIGEST", DIGEST)
    monkeypatch.setenv("GATEHOUSE_ENVOY_REGISTRY_MIRROR", "")
    assert host_envoy(Settings.from_env()) == (f"registry.internal:5000/envoy:v1.40.0@{DIGEST}", "")
    monkeypatch.setenv("GATEHOUSE_ENVOY_IMAGE_DIGEST", "sha256:nope")
    with pytest.raises(SystemExit, match="GATEHOUSE_ENVOY_IMAGE"):
        host_envoy(Settings.from_env())


def test_vm_hosts_and_pods_run_the_one_configured_image(tmp_path: object) -> None:
    pinned = f"registry.internal:5000/envoy:v1.40.0@{DIGEST}"
    spec = resources_pb2.GatewaySpec(backend="kubernetes", region="r", replicas=1)
    gateway = resources_pb2.Gateway(id="gw-0123456789ab", project="main", name="edge", spec=spec)
    default = CloudGatewayBackend("kubernetes", NoCloud(), XdsEndpoint("xds", 1))
    backend = CloudGatewayBackend(
        "kubernetes",
        NoCloud(),
        XdsEndpoint("xds", 1),
        envoy_image=pinned,
        registry_mirror="https://registry.internal",
    )
    plan = backend.plan(gateway)
    pod = manifests.deployment(plan, 0, "f")["spec"]["template"]["spec"]
    assert {container["image"] for container in pod["containers"]} == {pinned}
    script = unpack_startup_script(plan.startup_script(0))
    assert pinned in script and '{"registry-mirrors": ["https://registry.internal"]}' in script
    # Hosts are replaced when their Envoy changes.
    assert plan.host_fingerprint("t") != default.plan(gateway).host_fingerprint("t")
