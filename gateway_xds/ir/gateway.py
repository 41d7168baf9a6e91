"""The whole IR of one gateway, and its validation (also usable one piece at a time)."""

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from gateway_xds.ir.agent_tunnels import AgentTunnels, validate_agent_tunnels
from gateway_xds.ir.backends import Backend
from gateway_xds.ir.listeners import HTTPListener, RouteTable
from gateway_xds.ir.policies import validate_authorization, validate_rate_limits
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.ir.tls import TLSSecret, validate_challenge, validate_secret, validate_tls_port


@dataclass(frozen=True)
class GatewayIR:
    gateway_id: str
    listeners: tuple[HTTPListener, ...] = ()
    backends: tuple[Backend, ...] = ()
    # Certificates the listeners' TLS ports refer to by name.
    secrets: tuple[TLSSecret, ...] = ()
    # Where agents of replicas behind NAT connect; None: no backend may be served by agents.
    agent_tunnels: AgentTunnels | None = None

    def validate(self) -> list[str]:
        """Every problem found, so a caller can report them all at once; empty when valid."""
        errors: list[str] = []
        if not self.gateway_id:
            errors.append("gateway_id must not be empty")
        errors += _duplicates("backend name", (b.name for b in self.backends))
        tunnels = self.agent_tunnels
        tunnel_names, tunnel_ports = ([tunnels.name], [tunnels.port]) if tunnels else ([], [])
        errors += _duplicates("listener name", [*_listener_names(self.listeners), *tunnel_names])
        errors += _duplicates("listener port", [*_listener_ports(self.listeners), *tunnel_ports])
        if tunnels is not None:
            errors += validate_agent_tunnels(tunnels)
        errors += _duplicates("secret name", (s.name for s in self.secrets))
        for secret in self.secrets:
            errors += validate_secret(secret)
        secret_names = {s.name for s in self.secrets}
        for listener in self.listeners:
            for certificate in listener.tls.certificates if listener.tls else ():
                if certificate.secret not in secret_names:
                    errors.append(f"listener {listener.name!r}: unknown secret {certificate.secret!r}")
        scoped = (
            v.name for li in self.listeners if li.route_table is RouteTable.PER_HOST for v in li.virtual_hosts
        )
        errors += _duplicates("per-host virtual host", scoped)
        for backend in self.backends:
            errors += validate_backend(backend)
            if backend.agent_name and tunnels is None:
                errors.append(
                    f"backend {backend.name!r} is served by agents but the gateway takes no tunnels"
                )
        backend_names = {b.name for b in self.backends}
        for listener in self.listeners:
            errors += _validate_listener(listener, backend_names)
        return errors


def validate_backend(backend: Backend) -> list[str]:
    where = f"backend {backend.name!r}"
    errors: list[str] = []
    if not backend.name:
        errors.append("backend name must not be empty")
    if backend.connect_timeout_ms <= 0:
        errors.append(f"{where}: connect_timeout_ms must be positive")
    for endpoint in backend.endpoints:
        errors += _ip_error(where, endpoint.host)
        errors += _port_error(where, endpoint.port)
    if backend.agent_name and backend.endpoints:
        errors.append(f"{where}: a backend served by agents has no endpoints of its own")
    return errors


def validate_listener_shell(listener: HTTPListener) -> list[str]:
    """What the listener itself needs, apart from its virtual hosts."""
    where = f"listener {listener.name!r}"
    errors: list[str] = []
    if not listener.name:
        errors.append("listener name must not be empty")
    errors += _ip_error(where, listener.address)
    errors += _port_error(where, listener.port)
    if listener.tls is not None:
        errors += validate_tls_port(where, listener.tls)
        if listener.tls.port == listener.port or listener.tls.name == listener.name:
            errors.append(f"{where}: the TLS port needs its own port and name")
    return errors


def _listener_names(listeners: Iterable[HTTPListener]) -> Iterable[str]:
    for listener in listeners:
        yield listener.name
        if listener.tls is not None:
            yield listener.tls.name


def _listener_ports(listeners: Iterable[HTTPListener]) -> Iterable[int]:
    for listener in listeners:
        yield listener.port
        if listener.tls is not None:
            yield listener.tls.port


def validate_virtual_host(listener: HTTPListener, vhost: VirtualHost) -> list[str]:
    """One virtual host on its listener, apart from its backend's existence and its neighbours."""
    where = f"listener {listener.name!r} virtual host {vhost.name!r}"
    errors: list[str] = []
    if not vhost.name:
        errors.append(f"{where}: name must not be empty")
    if not vhost.domains:
        errors.append(f"{where}: needs at least one domain")
    errors += [f"{where}: invalid domain {d!r}" for d in vhost.domains if not _valid_domain(d)]
    if listener.route_table is RouteTable.PER_HOST:
        exact = len(vhost.domains) == 1 and _exact_domain(vhost.domains[0])
        if not exact:
            errors.append(f"{where}: a per-host listener needs exactly one exact, lower-case domain")
    errors += _port_error(where, vhost.https_port)
    for challenge in vhost.acme_challenges:
        errors += validate_challenge(where, challenge)
    errors += [f"{where}: {e}" for e in _duplicates("ACME token", (c.token for c in vhost.acme_challenges))]
    errors += validate_rate_limits(where, vhost.rate_limits)
    if vhost.authorization is not None:
        errors += validate_authorization(where, vhost.authorization)
    if any(limit.shared for limit in vhost.rate_limits) and not listener.authorization_cluster:
        errors.append(f"{where}: shares rate limits but the listener has no server to count them")
    if vhost.scale_from_zero is not None and not listener.authorization_cluster:
        errors.append(f"{where}: scales from zero but the listener has no server to wake it")
    if vhost.canary is not None:
        if not 0 <= vhost.canary.weight <= 100:
            errors.append(f"{where}: canary weight {vhost.canary.weight} is not a percent")
        if vhost.canary.backend == vhost.backend:
            errors.append(f"{where}: the canary needs a backend of its own")
    for field in ("request_timeout_ms", "idle_timeout_ms", "max_request_body_bytes", "connect_retries"):
        if getattr(vhost, field) < 0:
            errors.append(f"{where}: {field} must not be negative")
    return errors


def _duplicates(what: str, values: Iterable[object]) -> list[str]:
    counts = Counter(values)
    return [f"duplicate {what} {value!r}" for value, n in counts.items() if n > 1]


def _port_error(where: str, port: int) -> list[str]:
    if 1 <= port <= 65535:
        return []
    return [f"{where}: port {port} out of range 1-65535"]


def _ip_error(where: str, host: str) -> list[str]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return [f"{where}: {host!r} is not an IP address"]
    return []


def _validate_listener(listener: HTTPListener, backend_names: set[str]) -> list[str]:
    where = f"listener {listener.name!r}"
    errors = validate_listener_shell(listener)
    errors += [f"{where}: {e}" for e in _duplicates("virtual host", (v.name for v in listener.virtual_hosts))]
    domains = (d.lower() for v in listener.virtual_hosts for d in v.domains)
    errors += [f"{where}: {e}" for e in _duplicates("domain", domains)]
    for vhost in listener.virtual_hosts:
        errors += validate_virtual_host(listener, vhost)
        if vhost.backend not in backend_names:
            errors.append(f"{where} virtual host {vhost.name!r}: unknown backend {vhost.backend!r}")
        if vhost.canary is not None and vhost.canary.backend not in backend_names:
            errors.append(
                f"{where} virtual host {vhost.name!r}: unknown canary backend {vhost.canary.backend!r}"
            )
    return errors


def _valid_domain(domain: str) -> bool:
    # Envoy accepts "*" alone, or a single wildcard as a prefix or a suffix.
    if not domain or any(c.isspace() for c in domain):
        return False
    if domain == "*":
        return True
    inner = domain.removeprefix("*").removesuffix("*")
    return bool(inner) and "*" not in inner and domain.count("*") <= 1


def _exact_domain(domain: str) -> bool:
    # Scope keys are compared exactly with the Host header cut at its first ':'.
    return "*" not in domain and ":" not in domain and domain == domain.lower()
