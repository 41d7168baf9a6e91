"""What a cloud backend must make for one gateway, derived from the gateway alone.

Every backend names and tags its resources from the same plan, so any of them can be found again by
the gateway's id after a crash, and everything a gateway made can be found when it is deleted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.v1 import resources_pb2
from services.provisioner.hosts.identity import HostFile, JoinEndpoint, host_files, xds_tls
from services.provisioner.hosts.limits import check_startup_data
from services.provisioner.hosts.startup import (
    DEFAULT_REGISTRY_MIRROR,
    ENVOY_IMAGE,
    pack_startup_script,
    render_startup_script,
)

# Tag (label) keys every backend writes. Lowercase letters and dashes only, so the same keys are valid
# AWS tags, GCP labels, Azure tags and Kubernetes labels.
TAG_GATEWAY = "gatehouse-gateway"
TAG_HOST = "gatehouse-host"
TAG_FINGERPRINT = "gatehouse-fingerprint"
TAG_PROJECT = "gatehouse-project"
TAG_NAME = "gatehouse-name"

HTTP_PORT = 80
HTTPS_PORT = 443


@dataclass(frozen=True)
class XdsEndpoint:
    """Where gateway hosts reach gateway_xds: an address the hosts can route to (a name may resolve
    to several copies), and the addresses of further copies."""

    host: str
    port: int
    others: tuple[tuple[str, int], ...] = ()


class JoinTokenSource(Protocol):
    """Single-use, expiring join tokens (`join.JoinTokens`)."""

    def issue(self, gateway_id: str, host_index: int) -> str: ...

    def is_live(self, token: str) -> bool:
        """Not used yet and not expired."""
        ...


@dataclass(frozen=True)
class GatewayPlan:
    gateway_id: str
    project: str
    name: str
    region: str
    public_ip: bool
    # The ACM certificate's ARN when `certificate: acm` (TLS ends at a load balancer).
    acm_certificate_arn: str | None
    # None: the backend's small default.
    instance_type: str | None
    replicas: int
    # 80, 443 and every port a service maps on this gateway, sorted.
    inbound_ports: tuple[int, ...]
    xds: XdsEndpoint
    user_tags: tuple[tuple[str, str], ...] = ()
    envoy_image: str = ENVOY_IMAGE
    # Where Docker on a VM host pulls Docker Hub images first (empty: Docker Hub only).
    registry_mirror: str = DEFAULT_REGISTRY_MIRROR
    # Where hosts trade a join token for their client certificate (mTLS to gateway_xds) and renew it;
    # None: plain-text xDS.
    join: JoinEndpoint | None = None
    # Issues each host its token as its files are made.
    join_tokens: JoinTokenSource | None = field(default=None, repr=False, compare=False)
    # The gateway's backend (`aws`, `gcp`, ...): whose limits the startup data is held to.
    backend: str = ""

    @classmethod
    def of(
        cls, gateway: resources_pb2.Gateway, xds: XdsEndpoint, mapped_ports: frozenset[int] = frozenset()
    ) -> GatewayPlan:
        spec = gateway.spec
        acm = spec.HasField("certificate") and spec.certificate.type == "acm"
        return cls(
            gateway_id=gateway.id,
            project=gateway.project,
            name=gateway.name,
            region=spec.region,
            public_ip=spec.public_ip,
            acm_certificate_arn=(spec.certificate.arn or None) if acm else None,
            instance_type=spec.instance_type or None,
            replicas=max(1, spec.replicas),
            inbound_ports=tuple(sorted({HTTP_PORT, HTTPS_PORT, *mapped_ports})),
            xds=xds,
            user_tags=tuple(sorted(spec.tags.items())),
            backend=spec.backend,
        )

    @property
    def base_name(self) -> str:
        """`gatehouse-<gateway id>`: a valid name on every cloud (lowercase, starts with a letter)."""
        return f"gatehouse-{self.gateway_id}"

    def host_name(self, index: int) -> str:
        return f"{self.base_name}-{index}"

    def tags(self, index: int | None = None, fingerprint: str | None = None) -> dict[str, str]:
        """The user's tags, then ours (ours win: they are how resources are found again)."""
        tags = dict(self.user_tags)
        tags.update({TAG_GATEWAY: self.gateway_id, TAG_PROJECT: self.project, TAG_NAME: self.name})
        if index is not None:
            tags[TAG_HOST] = str(index)
        if fingerprint is not None:
            tags[TAG_FINGERPRINT] = fingerprint
        return tags

    def host_fingerprint(self, instance_type: str) -> str:
        """Changes when a host must be replaced: its size, its addressing, its Envoy or control plane.

        The image is left out on purpose: a new Ubuntu release does not replace running hosts.
        """
        basis: list[object] = [instance_type, self.public_ip, self.xds.host, self.xds.port, self.envoy_image]
        if self.xds.others:
            basis.append(self.xds.others)
        if self.join is not None:
            # Hosts keep the join endpoint for renewals; plain-text hosts are replaced when mTLS comes.
            basis.append(self.join.url)
        return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:12]

    def bootstrap(self, index: int) -> dict[str, Any]:
        params = BootstrapParams(
            gateway_id=self.gateway_id,
            host_index=index,
            xds_host=self.xds.host,
            xds_port=self.xds.port,
            other_xds=self.xds.others,
            tls=None if self.join is None else xds_tls(),
        )
        return render_bootstrap(params)

    def issue_join_token(self, index: int) -> str | None:
        if self.join is None or self.join_tokens is None:
            return None
        return self.join_tokens.issue(self.gateway_id, index)

    def join_token_live(self, token: str) -> bool:
        return self.join_tokens is not None and self.join_tokens.is_live(token)

    def host_files(self, index: int, token: str | None) -> list[HostFile]:
        """What host `index` finds in its configuration directory, whatever the backend."""
        return host_files(self.bootstrap(index), self.join, token)

    def startup_script(self, index: int) -> str:
        """A cloud host's startup data: its first-boot script, with a new join token, packed small
        (`startup.pack_startup_script`) and checked against the backend's limits (`limits`)."""
        files = self.host_files(index, self.issue_join_token(index))
        script = render_startup_script(files, self.envoy_image, self.join, self.registry_mirror)
        packed = pack_startup_script(script)
        check_startup_data(self.backend, packed)
        return packed
