"""The kubernetes backend: a namespace per gateway, a Deployment of the official Envoy image per host
with its files (bootstrap, join token) in a Secret, and a Service of type LoadBalancer whose ingress
IP or hostname is the gateway's address. Deleting the gateway deletes its namespace, which takes
everything in it.

A pod keeps its key and certificate in an emptyDir, which goes with the pod: when the cluster makes
the pod again (a node drained or lost, an eviction), the new pod must join again, and the token in
the Secret has been used. So a host whose Deployment is not available and whose Secret holds no
token that can still be redeemed gets a new one (the kubelet updates the mounted Secret, and the
init container, retried with back-off, joins with it)."""

from __future__ import annotations

import threading
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from services.provisioner.backends.base import BackendError, HostInfo, NotReady
from services.provisioner.backends.cloud import CloudHost, refuse_acm
from services.provisioner.backends.kubernetes import manifests
from services.provisioner.credentials import KubernetesBackendConfig, read_file_or_data
from services.provisioner.hosts.plan import TAG_FINGERPRINT, TAG_GATEWAY, TAG_HOST, GatewayPlan

POD = "pod"


def _status_message(error: ApiException) -> str:
    try:
        body = yaml.safe_load(error.body or "") or {}
    except yaml.YAMLError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(message or error.reason or error.status).split())


def translate(error: Exception) -> Exception:
    if isinstance(error, ApiException) and error.status in (400, 401, 403, 404, 422):
        return BackendError(f"kubernetes: {_status_message(error)}")
    if isinstance(error, config.ConfigException):
        return BackendError(f"kubernetes: the kubeconfig: {' '.join(str(error).split())}")
    return error


class KubernetesDriver:
    def __init__(self, settings: KubernetesBackendConfig) -> None:
        self.config = settings
        self._api: client.ApiClient | None = None
        self._lock = threading.Lock()

    def translate(self, error: Exception) -> Exception:
        return translate(error)

    def _client(self) -> client.ApiClient:
        with self._lock:
            if self._api is None:
                try:
                    kubeconfig = yaml.safe_load(
                        read_file_or_data(self.config.kubeconfig, "kubernetes kubeconfig")
                    )
                except yaml.YAMLError as error:
                    raise BackendError(
                        f"kubernetes: the kubeconfig is not YAML: {str(error).splitlines()[0]}"
                    ) from None
                api = config.new_client_from_config_dict(kubeconfig, persist_config=False)
                if self.config.endpoint_url:
                    api.configuration.host = self.config.endpoint_url
                self._api = api
            return self._api

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._client())

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self._client())

    def instance_type(self, plan: GatewayPlan) -> str:
        if plan.instance_type:
            raise BackendError(
                "kubernetes: instance_type cannot be set: gateway hosts are pods on the cluster's nodes"
            )
        return POD

    def _namespace_phase(self, plan: GatewayPlan) -> str | None:
        try:
            found = self.core.read_namespace(manifests.namespace_name(plan))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return str(found.status.phase) if found.status and found.status.phase else "Active"

    def prepare(self, plan: GatewayPlan) -> None:
        refuse_acm(plan, "kubernetes")
        if not plan.public_ip:
            raise BackendError("kubernetes: private gateways (public_ip: false) are supported on aws and gcp")
        phase = self._namespace_phase(plan)
        if phase == "Terminating":
            raise NotReady("waiting for the gateway's previous namespace to go away", retry_after=10.0)
        if phase is None:
            self._create(
                lambda: self.core.create_namespace(
                    client.V1Namespace.model_validate(manifests.namespace(plan))
                )
            )
        wanted = manifests.service(plan)
        namespace = manifests.namespace_name(plan)
        try:
            current = self.core.read_namespaced_service(manifests.SERVICE_NAME, namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            self._create(
                lambda: self.core.create_namespaced_service(
                    namespace, client.V1Service.model_validate(wanted)
                )
            )
            return
        have = sorted((port.port, port.target_port) for port in current.spec.ports or [])
        if have != sorted((port["port"], port["targetPort"]) for port in wanted["spec"]["ports"]):
            current.spec.ports = [
                client.V1ServicePort.model_validate(port) for port in wanted["spec"]["ports"]
            ]
            self.core.replace_namespaced_service(manifests.SERVICE_NAME, namespace, current)

    @staticmethod
    def _create(call: Any) -> None:
        """Creates; an object already there (made by a pass whose answer was lost) is fine."""
        try:
            call()
        except ApiException as error:
            if error.status != 409:
                raise

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        if self._namespace_phase(plan) in (None, "Terminating"):
            return []
        found = self.apps.list_namespaced_deployment(
            manifests.namespace_name(plan), label_selector=f"{TAG_GATEWAY}={plan.gateway_id}"
        )
        hosts = []
        for item in found.items:
            labels = item.metadata.labels or {}
            available = (item.status.available_replicas or 0) if item.status else 0
            host = CloudHost(
                index=int(labels.get(TAG_HOST, "-1")),
                id=item.metadata.name,
                fingerprint=labels.get(TAG_FINGERPRINT, ""),
                running=available >= 1,
            )
            if not host.running and 0 <= host.index < plan.replicas:
                self._rearm(plan, host)
            hosts.append(host)
        return hosts

    def _rearm(self, plan: GatewayPlan, host: CloudHost) -> None:
        """A new join token in the host's Secret if the one there cannot be redeemed any more."""
        if plan.join is None:
            return
        namespace = manifests.namespace_name(plan)
        try:
            found = self.core.read_namespaced_secret(host.id, namespace)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        token = manifests.secret_join_token(found.data)
        if token is not None and plan.join_token_live(token):
            return
        self._write_secret(plan, host.index, host.fingerprint)

    def _write_secret(self, plan: GatewayPlan, index: int, fingerprint: str) -> None:
        namespace = manifests.namespace_name(plan)
        wanted = manifests.secret(plan, index, fingerprint, plan.issue_join_token(index))
        secret = client.V1Secret.model_validate(wanted)
        try:
            self.core.create_namespaced_secret(namespace, secret)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.replace_namespaced_secret(manifests.host_name(index), namespace, secret)

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        self._write_secret(plan, index, fingerprint)
        deployment = client.V1Deployment.model_validate(manifests.deployment(plan, index, fingerprint))
        namespace = manifests.namespace_name(plan)
        self._create(lambda: self.apps.create_namespaced_deployment(namespace, deployment))

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        namespace = manifests.namespace_name(plan)
        for delete in (self.apps.delete_namespaced_deployment, self.core.delete_namespaced_secret):
            try:
                delete(host.id, namespace, _preload_content=False)
            except ApiException as error:
                if error.status != 404:
                    raise

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        found = self.core.read_namespaced_service(manifests.SERVICE_NAME, manifests.namespace_name(plan))
        ingress = (
            (found.status.load_balancer.ingress or []) if found.status and found.status.load_balancer else []
        )
        address = next((entry.ip or entry.hostname for entry in ingress if entry.ip or entry.hostname), None)
        if address is None:
            raise NotReady(
                "waiting for the load balancer's address (the cluster needs a load balancer provider)",
                retry_after=10.0,
            )
        return HostInfo(
            hostname=address,
            listen_address="0.0.0.0",
            http_port=manifests.POD_HTTP_PORT,
            https_port=manifests.POD_HTTPS_PORT,
        )

    def delete_all(self, plan: GatewayPlan) -> list[str]:
        name = manifests.namespace_name(plan)
        phase = self._namespace_phase(plan)
        if phase is None:
            return []
        if phase != "Terminating":
            # The namespace takes its deployments, secrets and service (and the cloud its load balancer).
            self.core.delete_namespace(name, _preload_content=False)
            phase = self._namespace_phase(plan)
        return [] if phase is None else [f"namespace {name}"]
