"""The Kubernetes objects of a gateway, as manifests: a namespace per gateway, and per host a Secret
with its Envoy bootstrap and a Deployment of the official Envoy image; one LoadBalancer Service."""

from __future__ import annotations

import base64
import json
from typing import Any

from services.provisioner.hosts.plan import (
    HTTP_PORT,
    HTTPS_PORT,
    TAG_FINGERPRINT,
    TAG_GATEWAY,
    TAG_HOST,
    GatewayPlan,
)
from services.provisioner.hosts.startup import CONFIG_DIR, envoy_args

# Envoy runs unprivileged in the pod, so it listens above 1024; the Service maps 80 and 443 onto these.
POD_HTTP_PORT = 8080
POD_HTTPS_PORT = 8443
ENVOY_UID = 101  # the official image's `envoy` user
SERVICE_NAME = "gateway"
BOOTSTRAP_KEY = "envoy.json"
JOIN_TOKEN_KEY = "join-token"


def namespace_name(plan: GatewayPlan) -> str:
    return plan.base_name


def host_name(index: int) -> str:
    return f"envoy-{index}"


def _labels(plan: GatewayPlan, index: int | None = None, fingerprint: str | None = None) -> dict[str, str]:
    """Label values are at most 63 characters of [A-Za-z0-9_.-]; the user's tags go in annotations."""
    labels = {"app.kubernetes.io/name": "gatehouse-envoy", TAG_GATEWAY: plan.gateway_id}
    if index is not None:
        labels[TAG_HOST] = str(index)
    if fingerprint is not None:
        labels[TAG_FINGERPRINT] = fingerprint
    return labels


def _metadata(
    plan: GatewayPlan, name: str, index: int | None = None, fingerprint: str | None = None
) -> dict[str, Any]:
    return {"name": name, "labels": _labels(plan, index, fingerprint), "annotations": plan.tags(index)}


def namespace(plan: GatewayPlan) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _metadata(plan, namespace_name(plan))}


def pod_port(port: int) -> int:
    return {HTTP_PORT: POD_HTTP_PORT, HTTPS_PORT: POD_HTTPS_PORT}.get(port, port)


def service(plan: GatewayPlan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(plan, SERVICE_NAME),
        "spec": {
            "type": "LoadBalancer",
            "selector": {TAG_GATEWAY: plan.gateway_id},
            "ports": [
                {"name": f"tcp-{port}", "protocol": "TCP", "port": port, "targetPort": pod_port(port)}
                for port in plan.inbound_ports
            ],
        },
    }


def secret(plan: GatewayPlan, index: int, fingerprint: str) -> dict[str, Any]:
    data = {BOOTSTRAP_KEY: json.dumps(plan.bootstrap(index), indent=2, sort_keys=True)}
    if plan.join_token is not None:
        # The seam for the certificates issue: the pod trades this for its xDS client certificate.
        data[JOIN_TOKEN_KEY] = plan.join_token
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(plan, host_name(index), index, fingerprint),
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()},
    }


def deployment(plan: GatewayPlan, index: int, fingerprint: str) -> dict[str, Any]:
    labels = _labels(plan, index, fingerprint)
    ports = sorted({pod_port(port) for port in plan.inbound_ports})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(plan, host_name(index), index, fingerprint),
        "spec": {
            "replicas": 1,
            # Never two Envoys with one node id.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {TAG_GATEWAY: plan.gateway_id, TAG_HOST: str(index)}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": ENVOY_UID},
                    "containers": [
                        {
                            "name": "envoy",
                            "image": plan.envoy_image,
                            "args": envoy_args(f"{CONFIG_DIR}/{BOOTSTRAP_KEY}"),
                            "ports": [{"containerPort": port, "protocol": "TCP"} for port in ports],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": False},
                            "volumeMounts": [
                                {"name": "bootstrap", "mountPath": CONFIG_DIR, "readOnly": True}
                            ],
                        }
                    ],
                    "volumes": [{"name": "bootstrap", "secret": {"secretName": host_name(index)}}],
                },
            },
        },
    }
