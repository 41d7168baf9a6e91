"""A wire-level fake of the Kubernetes API server for the objects a gateway needs (namespaces,
secrets, deployments, services) with the controllers' part played too: deployments become
available (or not, when `pods_available` is off: pods that cannot start), a LoadBalancer service
gets an ingress address from the "cloud" (or never, on a cluster without a load balancer provider),
a deleted namespace terminates and takes its objects with it, a deleted LoadBalancer Service
lingers one step (the cloud's finalizer).

As strict as a cluster on what Gatehouse sends (`kubernetes_rules`, with sources): every request is
authorized against its token's RBAC rules (the provisioner's token is bound to a namespaced Role in
`namespace` only, `PROVISIONER_ROLE`; `admin_token` is cluster-admin), and a namespace labelled
`pod-security.kubernetes.io/enforce: restricted` (as `namespace` is) admits Deployments with a
warning but refuses their pods, which the Deployment then reports as a `ReplicaFailure`.

An admitted Deployment has a pod (`<deployment>-<hash>-<suffix>`, the template's labels and
containers; listed with `list pods`), whose containers' logs (`get pods/log`, `tailLines`) are what
`logs` says that container of that Deployment printed; a container with no log has not started, and
the API server answers 400 "is waiting to start", as for an app container behind an init container.

Bodies are the documented types (kubernetes 37.x validates every response with pydantic); errors
are `Status` objects with the API server's reasons and messages. Secrets and Deployments are checked
the way the API server validates them (`validate`), for what a gateway's manifests use: a manifest
the client's models accept but a cluster would refuse is refused here too (422 Invalid)."""

# ruff: noqa: E501 - messages are the API server's, verbatim

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
import re
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.fakes.jsonhttp import HttpError, Request, Response, Router, serving
from tests.fakes.kubernetes_rules import (
    CLUSTER_ADMIN,
    ENFORCE_LABEL,
    Rule,
    Subject,
    forbidden_message,
    restricted_violations,
    verb_of,
)

KINDS = {
    "namespaces": ("v1", "Namespace"),
    "secrets": ("v1", "Secret"),
    "services": ("v1", "Service"),
    "deployments": ("apps/v1", "Deployment"),
}
GROUPS = {"deployments": "deployments.apps"}
API_GROUPS = {
    "namespaces": "",
    "secrets": "",
    "services": "",
    "deployments": "apps",
    "pods": "",
    "pods/log": "",
}
# The Role the README asks users to bind the provisioner's credentials to, in its namespace only.
PROVISIONER_ROLE = (
    Rule(("",), ("secrets",), ("get", "list", "create", "update", "delete")),
    Rule(("",), ("services",), ("get", "create", "update", "delete")),
    Rule(("apps",), ("deployments",), ("list", "create", "delete")),
    Rule(("",), ("pods",), ("list",)),
    Rule(("",), ("pods/log",), ("get",)),
)


def status_error(code: int, reason: str, message: str) -> HttpError:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return HttpError(code, body)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_QUANTITY = re.compile(r"\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
_VOLUME_SOURCES = ("secret", "emptyDir", "configMap", "projected", "hostPath", "persistentVolumeClaim")
_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(value: str) -> float:
    matched = re.fullmatch(r"(\d+(?:\.\d+)?)(\D*)", value)
    assert matched is not None, value
    number, unit = matched.groups()
    return float(number) * _UNITS[unit]


def _invalid(kind: str, name: str, problems: list[str]) -> HttpError:
    return status_error(422, "Invalid", f'{kind} "{name}" is invalid: ' + ", ".join(problems))


def _validate_secret(body: dict[str, Any]) -> list[str]:
    problems = []
    for key, value in (body.get("data") or {}).items():
        if not _SECRET_KEY.fullmatch(key):
            problems.append(
                f'data[{key}]: Invalid value: "{key}": a valid config key must consist of '
                "alphanumeric characters, '-', '_' or '.'"
            )
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"data[{key}]: Invalid value: illegal base64 data")
    return problems


def _validate_container(path: str, container: dict[str, Any], volumes: set[str]) -> list[str]:
    problems = []
    name = container.get("name", "")
    if not _DNS_LABEL.fullmatch(name):
        problems.append(
            f"{path}.name: Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
        )
    if not container.get("image"):
        problems.append(f"{path}.image: Required value")
    mount_paths: set[str] = set()
    for index, mount in enumerate(container.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            problems.append(f'{path}.volumeMounts[{index}].name: Not found: "{mount.get("name")}"')
        if mount.get("mountPath") in mount_paths:
            problems.append(
                f'{path}.volumeMounts[{index}].mountPath: Invalid value: "{mount.get("mountPath")}": must be unique'
            )
        mount_paths.add(mount.get("mountPath", ""))
    for index, port in enumerate(container.get("ports") or []):
        if not 0 < port.get("containerPort", 0) < 65536:
            problems.append(
                f"{path}.ports[{index}].containerPort: Invalid value: {port.get('containerPort')}: must be between 1 and 65535, inclusive"
            )
    resources = container.get("resources") or {}
    for resource, limit in (resources.get("limits") or {}).items():
        request = (resources.get("requests") or {}).get(resource)
        if request is not None and _quantity(request) > _quantity(limit):
            problems.append(
                f'{path}.resources.requests: Invalid value: "{request}": must be less than or equal to {resource} limit of {limit}'
            )
    return problems


def _validate_deployment(body: dict[str, Any]) -> list[str]:
    spec = body.get("spec") or {}
    template = spec.get("template") or {}
    pod = template.get("spec") or {}
    problems = []
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        problems.append("spec.selector: Required value")
    elif any(labels.get(key) != value for key, value in selector.items()):
        problems.append(
            "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`"
        )
    volumes: set[str] = set()
    for index, volume in enumerate(pod.get("volumes") or []):
        path, name = f"spec.template.spec.volumes[{index}]", volume.get("name", "")
        if not _DNS_LABEL.fullmatch(name):
            problems.append(
                f"{path}.name: Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"
            )
        if name in volumes:
            problems.append(f'{path}.name: Duplicate value: "{name}"')
        volumes.add(name)
        sources = [source for source in _VOLUME_SOURCES if source in volume]
        if len(sources) != 1:
            problems.append(f"{path}: Invalid value: must specify exactly 1 volume type")
        mode = (volume.get("secret") or {}).get("defaultMode")
        if mode is not None and not 0 <= mode <= 0o777:
            problems.append(
                f"{path}.secret.defaultMode: Invalid value: {mode}: must be a number between 0 and 0777 (octal), both inclusive"
            )
        empty_dir = volume.get("emptyDir")
        if empty_dir is not None:
            if empty_dir.get("medium", "") not in ("", "Memory", "HugePages"):
                problems.append(f'{path}.emptyDir.medium: Unsupported value: "{empty_dir["medium"]}"')
            limit = empty_dir.get("sizeLimit")
            if limit is not None and not _QUANTITY.fullmatch(str(limit)):
                problems.append(
                    f'{path}.emptyDir.sizeLimit: Invalid value: "{limit}": quantities must match the regular expression'
                )
    names: set[str] = set()
    if not pod.get("containers"):
        problems.append("spec.template.spec.containers: Required value")
    for field_name in ("initContainers", "containers"):
        for index, container in enumerate(pod.get(field_name) or []):
            path = f"spec.template.spec.{field_name}[{index}]"
            problems += _validate_container(path, container, volumes)
            if container.get("name") in names:
                problems.append(f'{path}.name: Duplicate value: "{container.get("name")}"')
            names.add(container.get("name", ""))
    if pod.get("restartPolicy", "Always") != "Always":
        problems.append(
            f'spec.template.spec.restartPolicy: Unsupported value: "{pod["restartPolicy"]}": supported values: "Always"'
        )
    return problems


def validate(resource: str, body: dict[str, Any]) -> None:
    """What the API server checks on create and replace, for the fields a gateway's objects use."""
    name = (body.get("metadata") or {}).get("name", "")
    if resource == "secrets":
        problems = _validate_secret(body)
    elif resource == "deployments":
        problems = _validate_deployment(body)
    else:
        problems = []
    if problems:
        raise _invalid(KINDS[resource][1] + (".apps" if resource == "deployments" else ""), name, problems)


def namespace_phase(objects: dict[tuple[str, str, str], dict[str, Any]], name: str) -> str | None:
    found = objects.get(("namespaces", "", name))
    return None if found is None else str(found["status"]["phase"])


def _selected(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@dataclass
class FakeKubernetes:
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    # The namespace the provisioner's Role is in (it exists, and enforces Pod Security "restricted").
    namespace: str = "gatehouse"
    role: tuple[Rule, ...] = PROVISIONER_ROLE
    # What the cluster's load balancer provider hands out: an IP, a hostname, or nothing at all.
    load_balancer: str | None = "ip"
    load_balancer_quota: int = 10
    # Pods a namespace's ResourceQuota allows (None: no quota); the ReplicaSet's pods beyond it are refused.
    pod_quota: int | None = None
    # Off: deployments' pods never become available (an image that cannot be pulled, a node lost).
    pods_available: bool = True
    url: str = ""
    router: Router = field(default_factory=Router)
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    # (namespace, pod name) → the pod of an admitted Deployment.
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (deployment name, container name) → what that container of its pod printed.
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    addresses: Iterator[int] = field(default_factory=lambda: itertools.count(10))
    _pods_admitted: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.router.before_each = lambda request: self._controllers()
        self._routes()
        for name, labels in (("default", {}), (self.namespace, {ENFORCE_LABEL: "restricted"})):
            self.add_namespace(name, labels)

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        body: dict[str, Any] = {"metadata": {"name": name, "labels": dict(labels or {})}}
        body["metadata"]["labels"]["kubernetes.io/metadata.name"] = name
        body.update(spec={"finalizers": ["kubernetes"]}, status={"phase": "Active"})
        self.objects[("namespaces", "", name)] = self._meta("namespaces", "", body, None)

    def subject(self, token: str) -> Subject | None:
        if token == self.admin_token:
            return Subject("kubernetes-admin", CLUSTER_ADMIN)
        if token == self.token:
            return Subject(f"system:serviceaccount:{self.namespace}:gatehouse", self.role, self.namespace)
        return None

    @contextmanager
    def serve(self) -> Iterator[FakeKubernetes]:
        with serving(self.router) as url:
            self.url = url
            yield self

    def kubeconfig(self, token: str | None = None, namespace: str | None = None) -> str:
        context: dict[str, str] = {"cluster": "fake", "user": "gatehouse"}
        if namespace is not None:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "gatehouse", "user": {"token": token or self.token}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }
        return yaml.safe_dump(config)

    def of(self, resource: str, namespace: str = "") -> list[dict[str, Any]]:
        return [
            obj
            for (kind, ns, _), obj in self.objects.items()
            if kind == resource and (not namespace or ns == namespace)
        ]

    def inventory(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {resource: set() for resource in KINDS}
        for kind, namespace, name in self.objects:
            found[kind].add(f"{namespace}/{name}" if namespace else name)
        return found

    # -- the controllers ----------------------------------------------------------------------

    def _controllers(self) -> None:
        """One step of every controller, run before each request: time passes."""
        self._pods_admitted: dict[str, int] = {}
        for namespace, pod in list(self.pods):
            owner = pod.rsplit("-", 2)[0]
            if ("deployments", namespace, owner) not in self.objects:
                del self.pods[(namespace, pod)]
        for (kind, namespace, name), obj in list(self.objects.items()):
            if kind == "deployments":
                replicas = obj["spec"].get("replicas", 1)
                obj["status"] = {
                    "observedGeneration": obj["metadata"]["generation"],
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                }
                refused = self._pods_refused(namespace, name, obj)
                if refused is not None:
                    obj["status"].update(replicas=0, updatedReplicas=0, unavailableReplicas=replicas)
                    obj["status"]["conditions"] = [
                        {
                            "type": "ReplicaFailure",
                            "status": "True",
                            "reason": "FailedCreate",
                            "message": refused,
                            "lastUpdateTime": _now(),
                            "lastTransitionTime": _now(),
                        }
                    ]
                elif self.pods_available:
                    obj["status"].update(readyReplicas=replicas, availableReplicas=replicas)
                else:
                    obj["status"]["unavailableReplicas"] = replicas
                if refused is None:
                    self._pod_of(namespace, name, obj)
            if (
                kind == "services"
                and obj["metadata"].get("deletionTimestamp")
                and namespace_phase(self.objects, namespace) == "Active"
            ):
                # The cloud's load balancer is gone: its finalizer is removed.
                del self.objects[(kind, namespace, name)]
                continue
            balancer = kind == "services" and obj["spec"].get("type") == "LoadBalancer"
            if balancer and self.load_balancer and not obj["status"]["loadBalancer"].get("ingress"):
                number = next(self.addresses)
                address = (
                    {"ip": f"192.0.2.{number}"}
                    if self.load_balancer == "ip"
                    else {"hostname": f"a{number}.elb.eu-west-1.amazonaws.com"}
                )
                obj["status"]["loadBalancer"]["ingress"] = [address]
            if kind == "namespaces" and obj["status"]["phase"] == "Terminating":
                inside = [key for key in self.objects if key[1] == name]
                # The load balancer's finalizer holds its service (and so the namespace) one step longer.
                balancers = [
                    key
                    for key in inside
                    if key[0] == "services" and self.objects[key]["metadata"].get("deletionTimestamp")
                ]
                for key in inside:
                    if key[0] == "services" and key not in balancers:
                        self.objects[key]["metadata"]["deletionTimestamp"] = _now()
                    elif key[0] != "services" or key in balancers:
                        del self.objects[key]
                if not [key for key in self.objects if key[1] == name]:
                    del self.objects[(kind, namespace, name)]

    # -- requests -----------------------------------------------------------------------------

    def _pod_of(self, namespace: str, name: str, deployment: dict[str, Any]) -> None:
        """The Deployment's pod, made once (its ReplicaSet's hash from the Deployment's uid)."""
        prefix = f"{name}-{deployment['metadata']['uid'][:10].replace('-', '')}-"
        if any(ns == namespace and pod.startswith(prefix) for ns, pod in self.pods):
            return
        template = deployment["spec"]["template"]
        pod_name = prefix + secrets.token_hex(3)[:5]
        self.pods[(namespace, pod_name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "labels": dict(template.get("metadata", {}).get("labels", {})),
                "creationTimestamp": _now(),
                "resourceVersion": str(next(self.versions)),
            },
            "spec": template["spec"],
            "status": {"phase": "Running" if self.pods_available else "Pending"},
        }

    def _pods_refused(self, namespace: str, name: str, deployment: dict[str, Any]) -> str | None:
        """Why the ReplicaSet's pods are refused by the namespace's Pod Security level, if they are."""
        found = self.objects.get(("namespaces", "", namespace))
        labels = (found or {}).get("metadata", {}).get("labels") or {}
        pod = f"{name}-{deployment['metadata']['uid'][:10]}-{deployment['metadata']['uid'][-5:]}"
        problems = restricted_violations(deployment["spec"]["template"].get("spec") or {})
        if problems and labels.get(ENFORCE_LABEL) == "restricted":
            return f'pods "{pod}" is forbidden: violates PodSecurity "restricted:latest": ' + ", ".join(
                problems
            )
        if self.pod_quota is None:
            return None
        used = self._pods_admitted.get(namespace, 0)
        wanted = deployment["spec"].get("replicas", 1)
        if used + wanted > self.pod_quota:
            return (
                f'pods "{pod}" is forbidden: exceeded quota: compute, requested: pods={wanted}, '
                f"used: pods={used}, limited: pods={self.pod_quota}"
            )
        self._pods_admitted[namespace] = used + wanted
        return None

    def _authorize(
        self, request: Request, resource: str = "", namespace: str = "", name: str | None = None
    ) -> None:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        subject = self.subject(token)
        if subject is None:
            raise status_error(401, "Unauthorized", "Unauthorized")
        if not resource:
            return
        verb = verb_of(request.method, name is not None, request.query.get("watch") == "true")
        group = API_GROUPS[resource]
        if not subject.allows(group, resource, verb, namespace):
            raise status_error(
                403, "Forbidden", forbidden_message(subject, verb, group, resource, name, namespace)
            )

    def _meta(
        self, resource: str, namespace: str, body: dict[str, Any], existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        api_version, kind = KINDS[resource]
        body["apiVersion"], body["kind"] = api_version, kind
        meta = body.setdefault("metadata", {})
        meta.pop("resourceVersion", None)
        meta["resourceVersion"] = str(next(self.versions))
        if existing is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
            if resource == "deployments":
                meta["generation"] = 1
        else:
            meta.update(
                uid=existing["metadata"]["uid"], creationTimestamp=existing["metadata"]["creationTimestamp"]
            )
            if resource == "deployments":
                meta["generation"] = existing["metadata"]["generation"] + (body["spec"] != existing["spec"])
        if namespace:
            meta["namespace"] = namespace
        return body

    def _namespace_usable(self, namespace: str, name: str, resource: str) -> None:
        found = self.objects.get(("namespaces", "", namespace))
        if found is None:
            raise status_error(404, "NotFound", f'namespaces "{namespace}" not found')
        if found["status"]["phase"] == "Terminating":
            raise status_error(
                403,
                "Forbidden",
                f'{GROUPS.get(resource, resource)} "{name}" is forbidden: unable to create new content in namespace {namespace} because it is being terminated',
            )

    def _create(self, resource: str, namespace: str, request: Request) -> Response:
        self._authorize(request, resource, namespace)
        body = request.body
        name = body["metadata"]["name"]
        validate(resource, body)
        if namespace:
            self._namespace_usable(namespace, name, resource)
        if (resource, namespace, name) in self.objects:
            raise status_error(
                409, "AlreadyExists", f'{GROUPS.get(resource, resource)} "{name}" already exists'
            )
        if resource == "services" and body["spec"].get("type") == "LoadBalancer":
            used = sum(
                1 for obj in self.of("services", namespace) if obj["spec"].get("type") == "LoadBalancer"
            )
            if used >= self.load_balancer_quota:
                raise status_error(
                    403,
                    "Forbidden",
                    f'services "{name}" is forbidden: exceeded quota: gateways, requested: services.loadbalancers=1, used: services.loadbalancers={used}, limited: services.loadbalancers={self.load_balancer_quota}',
                )
            body["spec"].setdefault("clusterIP", f"10.96.0.{next(self.addresses)}")
            for port in body["spec"]["ports"]:
                port.setdefault("protocol", "TCP")
                port.setdefault("nodePort", 30000 + port["port"] % 2000)
        body.setdefault("status", {})
        if resource == "namespaces":
            body["spec"] = {"finalizers": ["kubernetes"]}
            body["status"] = {"phase": "Active"}
        if resource == "services":
            body["status"] = {"loadBalancer": {}}
        self.objects[(resource, namespace, name)] = self._meta(resource, namespace, body, None)
        return Response(201, body, self._warnings(resource, namespace, body))

    def _warnings(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, str]:
        """A Deployment whose pods the namespace's Pod Security level will refuse is admitted, with a
        warning."""
        found = self.objects.get(("namespaces", "", namespace)) or {}
        enforced = (found.get("metadata", {}).get("labels") or {}).get(ENFORCE_LABEL) == "restricted"
        problems = (
            restricted_violations(body["spec"]["template"].get("spec") or {})
            if resource == "deployments"
            else []
        )
        if not enforced or not problems:
            return {}
        text = 'would violate PodSecurity "restricted:latest": ' + ", ".join(problems)
        return {"Warning": f'299 - "{text}"'}

    def _found(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        found = self.objects.get((resource, namespace, name))
        if found is None:
            raise status_error(404, "NotFound", f'{GROUPS.get(resource, resource)} "{name}" not found')
        return found

    def _routes(self) -> None:
        r = self.router
        prefixes = {
            "namespaces": "/api/v1",
            "secrets": "/api/v1",
            "services": "/api/v1",
            "deployments": "/apis/apps/v1",
        }

        @r.route("POST", "/api/v1/namespaces")
        def create_namespace(request: Request) -> Response:
            return self._create("namespaces", "", request)

        @r.route("GET", "/api/v1/namespaces/{name}")
        def read_namespace(request: Request) -> Response:
            self._authorize(request, "namespaces", "", request.params["name"])
            return Response(200, self._found("namespaces", "", request.params["name"]))

        @r.route("DELETE", "/api/v1/namespaces/{name}")
        def delete_namespace(request: Request) -> Response:
            self._authorize(request, "namespaces", "", request.params["name"])
            found = self._found("namespaces", "", request.params["name"])
            found["status"]["phase"] = "Terminating"
            found["metadata"]["deletionTimestamp"] = _now()
            return Response(200, found)

        @r.route("GET", "/api/v1/namespaces/{namespace}/pods")
        def list_pods(request: Request) -> Response:
            namespace = request.params["namespace"]
            self._authorize(request, "pods", namespace)
            items = [
                pod
                for (ns, _), pod in self.pods.items()
                if ns == namespace
                and _selected(pod["metadata"]["labels"], request.query.get("labelSelector"))
            ]
            return Response(
                200,
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(next(self.versions))},
                    "items": items,
                },
            )

        @r.route("GET", "/api/v1/namespaces/{namespace}/pods/{name}/log")
        def read_pod_log(request: Request) -> Response:
            namespace, name = request.params["namespace"], request.params["name"]
            self._authorize(request, "pods/log", namespace, name)
            pod = self.pods.get((namespace, name))
            if pod is None:
                raise status_error(404, "NotFound", f'pods "{name}" not found')
            containers = [
                c["name"] for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
            ]
            container = request.query.get("container") or containers[-1]
            if container not in containers:
                raise status_error(
                    400,
                    "BadRequest",
                    f"container {container} is not valid for pod {name}",
                )
            printed = self.logs.get((name.rsplit("-", 2)[0], container))
            if printed is None:
                raise status_error(
                    400,
                    "BadRequest",
                    f'container "{container}" in pod "{name}" is waiting to start: PodInitializing',
                )
            tail = request.query.get("tailLines")
            lines = printed.splitlines(keepends=True)
            shown = "".join(lines[-int(tail) :] if tail else lines)
            return Response(200, shown.encode(), content_type="text/plain")

        for resource in ("secrets", "services", "deployments"):

            def handlers(resource: str = resource) -> None:
                base = prefixes[resource] + "/namespaces/{namespace}/" + resource

                @r.route("POST", base)
                def create(request: Request) -> Response:
                    return self._create(resource, request.params["namespace"], request)

                @r.route("GET", base)
                def list_(request: Request) -> Response:
                    self._authorize(request, resource, request.params["namespace"])
                    api_version, kind = KINDS[resource]
                    items = [
                        obj
                        for obj in self.of(resource, request.params["namespace"])
                        if _selected(obj["metadata"].get("labels", {}), request.query.get("labelSelector"))
                    ]
                    return Response(
                        200,
                        {
                            "kind": f"{kind}List",
                            "apiVersion": api_version,
                            "metadata": {"resourceVersion": str(next(self.versions))},
                            "items": items,
                        },
                    )

                @r.route("GET", base + "/{name}")
                def read(request: Request) -> Response:
                    self._authorize(request, resource, request.params["namespace"], request.params["name"])
                    return Response(
                        200, self._found(resource, request.params["namespace"], request.params["name"])
                    )

                @r.route("PUT", base + "/{name}")
                def replace(request: Request) -> Response:
                    namespace, name = request.params["namespace"], request.params["name"]
                    self._authorize(request, resource, namespace, name)
                    existing = self._found(resource, namespace, name)
                    body = request.body
                    validate(resource, body)
                    sent = body.get("metadata", {}).get("resourceVersion")
                    if sent and sent != existing["metadata"]["resourceVersion"]:
                        raise status_error(
                            409,
                            "Conflict",
                            f'Operation cannot be fulfilled on {GROUPS.get(resource, resource)} "{name}": the object has been modified; please apply your changes to the latest version and try again',
                        )
                    body["status"] = existing.get("status", {})
                    if resource == "services":
                        body["spec"].setdefault("clusterIP", existing["spec"].get("clusterIP"))
                    self.objects[(resource, namespace, name)] = self._meta(
                        resource, namespace, body, existing
                    )
                    return Response(200, body, self._warnings(resource, namespace, body))

                @r.route("DELETE", base + "/{name}")
                def delete(request: Request) -> Response:
                    namespace, name = request.params["namespace"], request.params["name"]
                    self._authorize(request, resource, namespace, name)
                    found = self._found(resource, namespace, name)
                    if resource == "services" and found["spec"].get("type") == "LoadBalancer":
                        # service.kubernetes.io/load-balancer-cleanup: gone once the cloud's is.
                        found["metadata"]["deletionTimestamp"] = _now()
                        return Response(200, found)
                    del self.objects[(resource, namespace, name)]
                    return Response(
                        200,
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "metadata": {},
                            "status": "Success",
                            "details": {"name": name, "kind": resource, "uid": found["metadata"]["uid"]},
                        },
                    )

            handlers()
