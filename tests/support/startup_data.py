"""The largest startup data a realistic gateway host gets, per cloud: mTLS joining on (the production
default), the longest DNS names for the control plane, an image from a private mirror pinned by
digest, many mapped ports, the most and longest tags a cloud takes. Shared by the size test and
`bench/host_boot.py`, which records the figures."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from pathlib import Path

from gatehouse.v1 import resources_pb2
from services.common.internal_ca import InternalCA
from services.provisioner.backends.cloud import CloudGatewayBackend
from services.provisioner.backends.kubernetes import manifests
from services.provisioner.hosts.identity import JoinEndpoint
from services.provisioner.hosts.plan import GatewayPlan, XdsEndpoint
from services.provisioner.hosts.startup import unpack_startup_script
from services.provisioner.join import JoinSetup
from tests.support.join_tokens import local_join_tokens
from tests.support.no_cloud import NoCloud

CLOUDS = ("aws", "gcp", "azure", "kubernetes")
# A DNS name is at most 253 characters, each label at most 63.
LONGEST_HOST = ".".join(["x" * 63, "y" * 63, "z" * 63, "control-plane.example"])[:253]
MIRRORED_IMAGE = (
    "registry.mirror.example.internal:5000/mirrors/docker.io/envoyproxy/envoy:v1.40.0@sha256:" + "f" * 64
)


@dataclass(frozen=True)
class StartupData:
    cloud: str
    # What the cloud API is sent for one host: user data, the metadata value, custom data (before
    # the SDK's base64), or the Secret as JSON.
    sent: str
    # The script it carries, unpacked (VMs); the Secret's files (Kubernetes).
    carried_bytes: int


def gateway(cloud: str, replicas: int = 3, tags: int = 50) -> resources_pb2.Gateway:
    """`tags`: AWS takes 50 per resource (keys of 128 characters, values of 256), GCP 64 labels."""
    spec = resources_pb2.GatewaySpec(
        backend=cloud, region="asia-southeast1", public_ip=True, replicas=replicas, domain="example.com"
    )
    for number in range(tags):
        spec.tags[f"k{number:03d}" + "k" * 60] = "v" * 63
    return resources_pb2.Gateway(id="gw-0123456789ab", project="p" * 50, name="n" * 50, spec=spec)


def largest_plan(cloud: str, directory: Path, largest: bool = True) -> GatewayPlan:
    """`largest`: else a typical gateway (a short control plane name, the default image, no tags)."""
    host = LONGEST_HOST if largest else "xds.example.com"
    ca = InternalCA.create()
    join = JoinSetup(
        local_join_tokens(),
        JoinEndpoint(f"https://{host}:50055", ca.certificate_pem.decode()),
    )
    # 10,000 mapped ports: none of them is in the startup data (they open firewall rules).
    ports = frozenset(range(20000, 30000)) if largest else frozenset()
    backend = CloudGatewayBackend(
        cloud,
        driver=NoCloud(),
        xds=XdsEndpoint(host, 50052),
        mapped_ports=lambda gateway_id: ports,
        join=join,
    )
    if not largest:
        return backend.plan(gateway(cloud, replicas=1, tags=0))
    return replace(backend.plan(gateway(cloud)), envoy_image=MIRRORED_IMAGE)


def startup_data(cloud: str, directory: Path, index: int = 2, largest: bool = True) -> StartupData:
    """What the cloud is sent for host `index` of the largest plan (`largest`; else a typical one)."""
    plan = largest_plan(cloud, directory, largest)
    index = index if largest else 0
    if cloud == "kubernetes":
        token = plan.issue_join_token(index)
        secret = manifests.secret(plan, index, plan.host_fingerprint("pod"), token)
        carried = sum(len(base64.b64decode(value)) for value in secret["data"].values())
        return StartupData(cloud, json.dumps(secret), carried)
    packed = plan.startup_script(index)
    return StartupData(cloud, packed, len(unpack_startup_script(packed).encode()))
