"""What a Kubernetes API server refuses beyond the objects' own validation, for the fake in
`kubernetes_api`: RBAC (a token's Role or ClusterRole rules, namespaced or cluster-wide) and Pod
Security admission at the "restricted" level. Messages are the API server's.

Sources:
- RBAC: https://kubernetes.io/docs/reference/access-authn-authz/rbac/ (a Role grants verbs on
  resources of API groups in its namespace only; cluster-scoped resources such as namespaces need a
  ClusterRole), and the request verbs of
  https://kubernetes.io/docs/reference/access-authn-authz/authorization/#determine-the-request-verb
  (GET on one object is `get`, on a collection `list`; POST `create`; PUT `update`; PATCH `patch`;
  DELETE `delete`, on a collection `deletecollection`).
- Pod Security Standards, "restricted": https://kubernetes.io/docs/concepts/security/pod-security-standards/
  and the messages of k8s.io/pod-security-admission/policy (check_*.go). A namespace labelled
  `pod-security.kubernetes.io/enforce` refuses pods that violate its level; a Deployment is
  admitted (with a warning), and its pods are refused when its ReplicaSet makes them
  (https://kubernetes.io/docs/concepts/security/pod-security-admission/#workload-resources-and-pod-templates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
# Volume types "restricted" allows.
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
VOLUME_SOURCES = (
    *sorted(RESTRICTED_VOLUMES),
    "hostPath",
    "nfs",
    "iscsi",
    "gcePersistentDisk",
    "awsElasticBlockStore",
)
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)


@dataclass(frozen=True)
class Rule:
    """One PolicyRule: verbs on resources of API groups ("*" for any)."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]

    def allows(self, group: str, resource: str, verb: str) -> bool:
        return (
            ("*" in self.api_groups or group in self.api_groups)
            and ("*" in self.resources or resource in self.resources)
            and ("*" in self.verbs or verb in self.verbs)
        )


@dataclass(frozen=True)
class Subject:
    """Who a bearer token is, and what its bindings grant: a Role's rules in `namespace`, or a
    ClusterRole's everywhere (namespace None)."""

    user: str
    rules: tuple[Rule, ...]
    namespace: str | None = None

    def allows(self, group: str, resource: str, verb: str, namespace: str) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        return any(rule.allows(group, resource, verb) for rule in self.rules)


CLUSTER_ADMIN = (Rule(("*",), ("*",), ("*",)),)


def verb_of(method: str, named: bool, watch: bool = False) -> str:
    if method == "GET":
        return "get" if named else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]


def forbidden_message(
    subject: Subject, verb: str, group: str, resource: str, name: str | None, namespace: str
) -> str:
    what = f'{resource} "{name}"' if name else resource
    where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    return (
        f'{what} is forbidden: User "{subject.user}" cannot {verb} resource "{resource}" '
        f'in API group "{group}" {where}'
    )


def _names(containers: list[str]) -> str:
    quoted = ", ".join(f'"{name}"' for name in containers)
    return f"container {quoted}" if len(containers) == 1 else f"containers {quoted}"


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What a pod spec breaks of the "restricted" Pod Security Standard (baseline included), in the
    admission plugin's words; empty when it complies."""
    problems: list[str] = []
    context = pod.get("securityContext") or {}
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]

    def each(test: Any) -> list[str]:
        return [c.get("name", "") for c in containers if test(c.get("securityContext") or {})]

    host = [name for name in ("hostNetwork", "hostPID", "hostIPC") if pod.get(name)]
    if host:
        problems.append(f"host namespaces ({', '.join(f'{name}=true' for name in host)})")
    privileged = each(lambda sc: sc.get("privileged"))
    if privileged:
        problems.append(f"privileged ({_names(privileged)} must not set securityContext.privileged=true)")
    host_ports = [
        c.get("name", "") for c in containers if any(port.get("hostPort") for port in c.get("ports") or [])
    ]
    if host_ports:
        problems.append(f"hostPort ({_names(host_ports)} uses hostPort)")
    unsafe = [s["name"] for s in context.get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    if unsafe:
        problems.append(f"forbidden sysctls ({', '.join(unsafe)})")
    escalating = each(lambda sc: sc.get("allowPrivilegeEscalation") is not False)
    if escalating:
        problems.append(
            f"allowPrivilegeEscalation != false ({_names(escalating)} must set "
            "securityContext.allowPrivilegeEscalation=false)"
        )
    not_dropped = each(lambda sc: "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []))
    if not_dropped:
        problems.append(
            f"unrestricted capabilities ({_names(not_dropped)} must set "
            'securityContext.capabilities.drop=["ALL"])'
        )
    added = sorted(
        {
            capability
            for c in containers
            for capability in ((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
            if capability != "NET_BIND_SERVICE"
        }
    )
    if added:
        problems.append(
            f"unrestricted capabilities (must not include {', '.join(added)} in capabilities.add)"
        )
    volumes = [
        (volume.get("name", ""), source)
        for volume in pod.get("volumes") or []
        for source in VOLUME_SOURCES
        if source in volume and source not in RESTRICTED_VOLUMES
    ]
    if volumes:
        shown = ", ".join(f'"{name}" uses restricted volume type "{source}"' for name, source in volumes)
        problems.append(f"restricted volume types (volume {shown})")
    pod_non_root = context.get("runAsNonRoot") is True
    root_unset = each(lambda sc: sc.get("runAsNonRoot") is not True and not pod_non_root)
    if root_unset or context.get("runAsNonRoot") is False:
        problems.append(
            f"runAsNonRoot != true (pod or {_names(root_unset)} must set securityContext.runAsNonRoot=true)"
        )
    as_root = each(lambda sc: sc.get("runAsUser") == 0)
    if as_root or context.get("runAsUser") == 0:
        problems.append("runAsUser=0 (pod and containers must not set runAsUser=0)")
    pod_seccomp = (context.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        problems.append(
            'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")'
        )
    allowed = ("RuntimeDefault", "Localhost")
    unconfined = each(lambda sc: (sc.get("seccompProfile") or {}).get("type", pod_seccomp) not in allowed)
    if unconfined:
        problems.append(
            f"seccompProfile (pod or {_names(unconfined)} must set securityContext.seccompProfile.type "
            'to "RuntimeDefault" or "Localhost")'
        )
    return problems
