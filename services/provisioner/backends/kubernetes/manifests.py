"""The Kubernetes objects of a gateway, as manifests, all in the backend's one namespace and named
after the gateway: per host a Secret with its files (`identity.host_files`, the ones a cloud host's
startup script writes) and a Deployment of the official Envoy image; one LoadBalancer Service.

Pods meet Pod Security "restricted" (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
they run as the image's unprivileged `envoy` user (runAsNonRoot), with the RuntimeDefault seccomp
profile, every capability dropped and no privilege escalation in every container, and only
secret and emptyDir volumes. Envoy listens on unprivileged ports (8080, 8443) the Service maps 80
and 443 onto.

With mTLS to gateway_xds, the pod joins the way a cloud host does, with the same `join.sh`: an init
container trades the Secret's join token for a key and client certificate in a memory-backed
emptyDir before Envoy starts, and a sidecar renews the certificate there, which Envoy picks up
through file-based SDS. Both run the Envoy image itself (it has sh and openssl), so a pod pulls one
image only.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from gatehouse.envoy_bootstrap import ADMIN_SOCKET_DIR
from services.provisioner.hosts.identity import (
    BOOTSTRAP_PATH,
    CONFIG_DIR,
    IDENTITY_DIR,
    JOIN_TOKEN_PATH,
    join_command,
)
from services.provisioner.hosts.plan import (
    HTTP_PORT,
    HTTPS_PORT,
    TAG_FINGERPRINT,
    TAG_GATEWAY,
    TAG_HOST,
    GatewayPlan,
)
from services.provisioner.hosts.startup import envoy_args

# Envoy runs unprivileged in the pod, so it listens above 1024; the Service maps 80 and 443 onto these.
POD_HTTP_PORT = 8080
POD_HTTPS_PORT = 8443
ENVOY_UID = 101  # the official image's `envoy` user (and group)
APP_NAME = "gatehouse-envoy"
JOIN_TOKEN_KEY = JOIN_TOKEN_PATH.rsplit("/", 1)[1]
CONFIG_VOLUME = "config"
IDENTITY_VOLUME = "identity"
ADMIN_VOLUME = "admin"
# The Secret's files: readable by the pod's user (through its group), by nobody else.
CONFIG_MODE = 0o440


def service_name(plan: GatewayPlan) -> str:
    return plan.base_name


def host_name(plan: GatewayPlan, index: int) -> str:
    """Host `index`'s Deployment and Secret: `gatehouse-<gateway id>-<index>`, unique in a namespace
    shared with other gateways."""
    return plan.host_name(index)


def selector(plan: GatewayPlan) -> str:
    """The label selector of every object of the gateway."""
    return f"app.kubernetes.io/name={APP_NAME},{TAG_GATEWAY}={plan.gateway_id}"


def _labels(plan: GatewayPlan, index: int | None = None, fingerprint: str | None = None) -> dict[str, str]:
    """Label values are at most 63 characters of [A-Za-z0-9_.-]; the user's tags go in annotations."""
    labels = {"app.kubernetes.io/name": APP_NAME, TAG_GATEWAY: plan.gateway_id}
    if index is not None:
        labels[TAG_HOST] = str(index)
    if fingerprint is not None:
        labels[TAG_FINGERPRINT] = fingerprint
    return labels


def _metadata(
    plan: GatewayPlan, name: str, index: int | None = None, fingerprint: str | None = None
) -> dict[str, Any]:
    return {"name": name, "labels": _labels(plan, index, fingerprint), "annotations": plan.tags(index)}


def pod_port(port: int) -> int:
    return {HTTP_PORT: POD_HTTP_PORT, HTTPS_PORT: POD_HTTPS_PORT}.get(port, port)


def service(plan: GatewayPlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(plan, service_name(plan)),
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app.kubernetes.io/name": APP_NAME, TAG_GATEWAY: plan.gateway_id},
            "ports": [
                {"name": f"tcp-{port}", "protocol": "TCP", "port": port, "targetPort": pod_port(port)}
                for port in plan.inbound_ports
            ],
        },
    }


def secret(plan: GatewayPlan, index: int, fingerprint: str, join_token: str | None) -> dict[str, Any]:
    """The host's files, each a key, mounted at CONFIG_DIR (the token under JOIN_TOKEN_KEY)."""
    files = plan.host_files(index, join_token)
    assert all(file.path == f"{CONFIG_DIR}/{file.name}" for file in files)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(plan, host_name(plan, index), index, fingerprint),
        "data": {file.name: base64.b64encode(file.content.encode()).decode() for file in files},
    }


def secret_join_token(data: Mapping[str, str | bytes] | None) -> str | None:
    """The join token in a Secret's `data`, as the API returns it."""
    encoded = (data or {}).get(JOIN_TOKEN_KEY)
    return base64.b64decode(encoded).decode() if encoded else None


def _mounts(identity_writable: bool) -> list[dict[str, Any]]:
    return [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": IDENTITY_VOLUME, "mountPath": IDENTITY_DIR, "readOnly": not identity_writable},
    ]


# What Pod Security "restricted" asks of every container (the pod sets the rest for all of them).
RESTRICTED_CONTAINER: dict[str, Any] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": ENVOY_UID,
    "runAsGroup": ENVOY_UID,
    "fsGroup": ENVOY_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _identity_container(name: str, plan: GatewayPlan, mode: str) -> dict[str, Any]:
    """join.sh in the Envoy image, writing the key and certificate into the shared emptyDir."""
    assert plan.join is not None
    return {
        "name": name,
        "image": plan.envoy_image,
        "command": join_command(mode, plan.join),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
        "volumeMounts": _mounts(identity_writable=True),
    }


def deployment(plan: GatewayPlan, index: int, fingerprint: str) -> dict[str, Any]:
    labels = _labels(plan, index, fingerprint)
    ports = sorted({pod_port(port) for port in plan.inbound_ports})
    envoy: dict[str, Any] = {
        "name": "envoy",
        "image": plan.envoy_image,
        "args": envoy_args(BOOTSTRAP_PATH),
        "ports": [{"containerPort": port, "protocol": "TCP"} for port in ports],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": dict(RESTRICTED_CONTAINER),
        "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": dict(RESTRICTED_POD),
        "containers": [envoy],
        "volumes": [
            {
                "name": CONFIG_VOLUME,
                "secret": {"secretName": host_name(plan, index), "defaultMode": CONFIG_MODE},
            }
        ],
    }
    if plan.join is not None:
        envoy["volumeMounts"] = _mounts(identity_writable=False)
    # Envoy's admin socket: in the pod only, no containerPort, so no Service or route reaches it.
    envoy["volumeMounts"].append({"name": ADMIN_VOLUME, "mountPath": ADMIN_SOCKET_DIR})
    pod["volumes"].append({"name": ADMIN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
    if plan.join is not None:
        pod["initContainers"] = [_identity_container("join", plan, "join")]
        pod["containers"].append(_identity_container("renew", plan, "renew-loop"))
        # In memory: the key never touches the node's disk.
        pod["volumes"].append({"name": IDENTITY_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(plan, host_name(plan, index), index, fingerprint),
        "spec": {
            "replicas": 1,
            # Never two Envoys with one node id.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {TAG_GATEWAY: plan.gateway_id, TAG_HOST: str(index)}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
