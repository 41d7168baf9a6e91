"""The kubernetes backend: in the backend's one namespace (configured, else the kubeconfig context's,
else `default`), per gateway a Deployment of the official Envoy image per host with its files
(bootstrap, join token) in a Secret, and a Service of type LoadBalancer whose ingress IP or hostname
is the gateway's address. Everything is named and labelled after the gateway, so gateways share the
namespace, and nothing needs more than a namespaced Role there: no namespace is made, read or deleted
(the README lists the Role's rules).

A pod keeps its key and certificate in an emptyDir, which goes with the pod: when the cluster makes
the pod again (a node drained or lost, an eviction), the new pod must join again, and the token in
the Secret has been used. So a host whose Deployment is not available and whose Secret holds no
token that can still be redeemed gets a new one (the kubelet updates the mounted Secret, and the
init container, retried with back-off, joins with it). A Deployment whose pods the cluster refuses
(Pod Security admission, a quota) says why on the gateway. A host whose Envoy never came shows the
logs of its pod's join and envoy containers.

The previous version put each gateway in a namespace of its own, `gatehouse-<gateway id>`. Such a
gateway's objects there are deleted when it is reconciled or deleted, where the credentials can see
that namespace (the cluster permission that version needed); with only the namespaced Role they
cannot, and one warning names the namespace to remove by hand."""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from services.provisioner.backends.base import BackendError, HostInfo, NotReady
from services.provisioner.backends.cloud import CloudHost, refuse_acm
from services.provisioner.backends.kubernetes import manifests
from services.provisioner.credentials import KubernetesBackendConfig, read_file_or_data
from services.provisioner.hosts.plan import TAG_FINGERPRINT, TAG_GATEWAY, TAG_HOST, GatewayPlan

POD = "pod"
# Of each container's log, the last lines: enough to see why it stopped.
LOG_TAIL_LINES = 200
# The containers whose logs explain a host that never served, in the order they run.
LOG_CONTAINERS = ("join", "envoy")

log = logging.getLogger(__name__)


def _status_message(error: ApiException) -> str:
    try:
        body = yaml.safe_load(error.body or "") or {}
    except yaml.YAMLError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(message or error.reason or error.status).split())


def _context_namespace(kubeconfig: Any) -> str | None:
    """The namespace of the kubeconfig's current context, if it names one."""
    if not isinstance(kubeconfig, dict):
        return None
    current = kubeconfig.get("current-context")
    for entry in kubeconfig.get("contexts") or []:
        if isinstance(entry, dict) and entry.get("name") == current:
            namespace = (entry.get("context") or {}).get("namespace")
            return str(namespace) if namespace else None
    return None


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
        self._namespace: str | None = None
        self._lock = threading.Lock()
        # Gateways whose legacy namespace was looked at in this process (reconciles look once).
        self._legacy_checked: set[str] = set()

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
                settings = client.Configuration()
                # A redirect is not followed: it could point the server's requests (with the
                # gateway's Secret) at an address only the server reaches.
                settings.retries = urllib3.Retry.DEFAULT.new(redirect=0)
                api = config.new_client_from_config_dict(
                    kubeconfig, persist_config=False, client_configuration=settings
                )
                if self.config.endpoint_url:
                    api.configuration.host = self.config.endpoint_url
                self._namespace = self.config.namespace or _context_namespace(kubeconfig) or "default"
                self._api = api
            return self._api

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self._client())

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self._client())

    @property
    def namespace(self) -> str:
        """The configured namespace, else the kubeconfig's current context's, else `default`."""
        self._client()
        assert self._namespace is not None
        return self._namespace

    def instance_type(self, plan: GatewayPlan) -> str:
        if plan.instance_type:
            raise BackendError(
                "kubernetes: instance_type cannot be set: gateway hosts are pods on the cluster's nodes"
            )
        return POD

    def _missing_namespace(self, error: ApiException) -> bool:
        return error.status == 404 and _status_message(error) == f'namespaces "{self.namespace}" not found'

    def prepare(self, plan: GatewayPlan) -> None:
        refuse_acm(plan, "kubernetes")
        if not plan.public_ip:
            raise BackendError("kubernetes: private gateways (public_ip: false) are supported on aws and gcp")
        if plan.gateway_id not in self._legacy_checked:
            self._delete_legacy(plan)  # once per process; deleting the gateway looks again
            self._legacy_checked.add(plan.gateway_id)
        wanted = manifests.service(plan)
        name = manifests.service_name(plan)
        try:
            current = self.core.read_namespaced_service(name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            try:
                self._create(
                    lambda: self.core.create_namespaced_service(
                        self.namespace, client.V1Service.model_validate(wanted)
                    )
                )
            except ApiException as failed:
                if self._missing_namespace(failed):
                    raise BackendError(
                        f"kubernetes: namespace {self.namespace} does not exist: create it (with a Role "
                        "for Gatehouse there), or set `namespace` in the project's kubernetes backend"
                    ) from None
                raise
            return
        if current.metadata and current.metadata.deletion_timestamp:
            raise NotReady("waiting for the gateway's previous Service to go away", retry_after=10.0)
        spec = current.spec
        if spec is None:
            raise BackendError(f"kubernetes: the cluster's Service {name} has no spec")
        have = sorted((port.port, port.target_port) for port in spec.ports or [])
        if have != sorted((port["port"], port["targetPort"]) for port in wanted["spec"]["ports"]):
            spec.ports = [client.V1ServicePort.model_validate(port) for port in wanted["spec"]["ports"]]
            self.core.replace_namespaced_service(name, self.namespace, current)
        self._hold_refused(plan)

    @staticmethod
    def _create(call: Any) -> None:
        """Creates; an object already there (made by a pass whose answer was lost) is fine."""
        try:
            call()
        except ApiException as error:
            if error.status != 409:
                raise

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        found = self.apps.list_namespaced_deployment(self.namespace, label_selector=manifests.selector(plan))
        hosts = []
        for item in found.items:
            labels = _meta(item).labels or {}
            if _meta(item).deletion_timestamp:
                continue
            available = (item.status.available_replicas or 0) if item.status else 0
            created = _meta(item).creation_timestamp
            host = CloudHost(
                index=int(labels.get(TAG_HOST, "-1")),
                id=_name(item),
                fingerprint=labels.get(TAG_FINGERPRINT, ""),
                running=available >= 1,
                launched_at=created.timestamp() if created is not None else None,
            )
            if not host.running and 0 <= host.index < plan.replicas:
                self._rearm(plan, host)
            hosts.append(host)
        return hosts

    def console_output(self, plan: GatewayPlan, host: CloudHost) -> str | None:
        """The last lines of the join and envoy containers of the host's pods, newest pod last; a
        container not started yet (envoy waiting for join) has none."""
        selector = f"{manifests.selector(plan)},{TAG_HOST}={host.index}"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        owned = [pod for pod in pods if (_meta(pod).name or "").startswith(f"{host.id}-")]
        owned.sort(key=lambda pod: (_meta(pod).creation_timestamp is not None, _meta(pod).creation_timestamp))
        parts = []
        for pod in owned:
            for container in LOG_CONTAINERS:
                try:
                    text = self.core.read_namespaced_pod_log(
                        _name(pod), self.namespace, container=container, tail_lines=LOG_TAIL_LINES
                    )
                except ApiException as error:
                    if error.status in (400, 404):  # not started yet, or no such container (no mTLS)
                        continue
                    raise
                if text:
                    parts.append(f"{_name(pod)} {container}:\n{text.rstrip()}")
        return "\n".join(parts) or None

    def _delete_legacy(self, plan: GatewayPlan) -> list[str]:
        """Deletes the gateway's objects in its namespace of the previous version (`gatehouse-<id>`),
        then that namespace, where these credentials may; what is still going away is listed."""
        namespace, selector = plan.base_name, f"{TAG_GATEWAY}={plan.gateway_id}"
        try:
            deployments = self.apps.list_namespaced_deployment(namespace, label_selector=selector).items
            secrets = self.core.list_namespaced_secret(namespace, label_selector=selector).items
            services = self.core.list_namespaced_service(namespace, label_selector=selector).items
        except ApiException as error:
            if error.status == 403:
                log.warning(
                    "kubernetes: cannot look in namespace %s, where the previous Gatehouse version put "
                    "gateway %s: delete it by hand if it is there (needs cluster permission)",
                    namespace,
                    plan.gateway_id,
                )
                return []
            if error.status == 404:
                return []
            raise
        remaining = []
        for deletion, items in (
            (self.apps.delete_namespaced_deployment, deployments),
            (self.core.delete_namespaced_secret, secrets),
            (self.core.delete_namespaced_service, services),
        ):
            for item in items:
                try:
                    deletion(_name(item), namespace, _preload_content=False)
                except ApiException as error:
                    if error.status not in (403, 404):
                        raise
        left = self.core.list_namespaced_service(namespace, label_selector=selector).items
        remaining += [f"service {_name(item)} in {namespace} (its load balancer)" for item in left]
        if deployments or secrets or services:
            log.info("kubernetes: deleted gateway %s's objects in namespace %s", plan.gateway_id, namespace)
        if not left:
            self._delete_legacy_namespace(plan, namespace)
        return remaining

    def _delete_legacy_namespace(self, plan: GatewayPlan, namespace: str) -> None:
        """The previous version's namespace itself, if it is the gateway's (by its label) and these
        credentials may delete it."""
        try:
            found = self.core.read_namespace(namespace)
            if (_meta(found).labels or {}).get(TAG_GATEWAY) != plan.gateway_id:
                return
            if not _meta(found).deletion_timestamp:
                self.core.delete_namespace(namespace, _preload_content=False)
        except ApiException as error:
            if error.status not in (403, 404):
                raise

    def _hold_refused(self, plan: GatewayPlan) -> None:
        """While the cluster will not make a host's pods (admission, a quota), the pass stops here
        with the cluster's words; `hosts` only lists."""
        found = self.apps.list_namespaced_deployment(self.namespace, label_selector=manifests.selector(plan))
        refused = []
        for item in found.items:
            index = int((_meta(item).labels or {}).get(TAG_HOST, "-1"))
            available = (item.status.available_replicas or 0) if item.status else 0
            failure = _replica_failure(item)
            if failure is not None and not available and 0 <= index < plan.replicas:
                refused.append(f"host {index}: {failure}")
                labels = _meta(item).labels or {}
                self._rearm(plan, CloudHost(index, _name(item), labels.get(TAG_FINGERPRINT, ""), False))
        if refused:
            raise NotReady("; ".join(sorted(refused)), retry_after=30.0)

    def _rearm(self, plan: GatewayPlan, host: CloudHost) -> None:
        """A new join token in the host's Secret if the one there cannot be redeemed any more."""
        if plan.join is None:
            return
        try:
            found = self.core.read_namespaced_secret(host.id, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        token = manifests.secret_join_token(found.data)
        if token is not None and plan.join_token_live(token):
            return
        self._write_secret(plan, host.index, host.fingerprint)

    def _write_secret(self, plan: GatewayPlan, index: int, fingerprint: str) -> None:
        wanted = manifests.secret(plan, index, fingerprint, plan.issue_join_token(index))
        secret = client.V1Secret.model_validate(wanted)
        try:
            self.core.create_namespaced_secret(self.namespace, secret)
        except ApiException as error:
            if error.status != 409:
                raise
            self.core.replace_namespaced_secret(manifests.host_name(plan, index), self.namespace, secret)

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        self._write_secret(plan, index, fingerprint)
        deployment = client.V1Deployment.model_validate(manifests.deployment(plan, index, fingerprint))
        self._create(lambda: self.apps.create_namespaced_deployment(self.namespace, deployment))

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        for delete in (self.apps.delete_namespaced_deployment, self.core.delete_namespaced_secret):
            try:
                delete(host.id, self.namespace, _preload_content=False)
            except ApiException as error:
                if error.status != 404:
                    raise

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        found = self.core.read_namespaced_service(manifests.service_name(plan), self.namespace)
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
        """Deletes the gateway's Deployments, Secrets and Service; what is still there (a Service
        whose cloud load balancer is going away) is listed."""
        namespace, selector = self.namespace, manifests.selector(plan)
        deployments = self.apps.list_namespaced_deployment(namespace, label_selector=selector).items
        secrets = self.core.list_namespaced_secret(namespace, label_selector=selector).items
        for deletion, items in (
            (self.apps.delete_namespaced_deployment, deployments),
            (self.core.delete_namespaced_secret, secrets),
        ):
            for item in items:
                try:
                    deletion(_name(item), namespace, _preload_content=False)
                except ApiException as error:
                    if error.status != 404:
                        raise
        remaining = self._delete_legacy(plan)
        name = manifests.service_name(plan)
        try:
            self.core.delete_namespaced_service(name, namespace, _preload_content=False)
            self.core.read_namespaced_service(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return remaining
            raise
        return [f"service {name} (its load balancer)", *remaining]


class _Stored(Protocol):
    @property
    def metadata(self) -> client.V1ObjectMeta | None: ...


def _meta(stored: _Stored) -> client.V1ObjectMeta:
    """The metadata of an object the API server sent, which always has it."""
    if stored.metadata is None:
        raise BackendError("kubernetes: the cluster sent an object without metadata")
    return stored.metadata


def _name(stored: _Stored) -> str:
    name = _meta(stored).name
    if name is None:
        raise BackendError("kubernetes: the cluster sent an object without a name")
    return name


def _replica_failure(deployment: Any) -> str | None:
    """Why the Deployment's ReplicaSet cannot make its pods, as the cluster says."""
    for condition in (deployment.status.conditions or []) if deployment.status else []:
        if condition.type == "ReplicaFailure" and condition.status == "True":
            return " ".join(str(condition.message or condition.reason).split())
    return None
