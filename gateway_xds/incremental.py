"""One gateway's snapshot, kept current one listener, service or certificate at a time.

A gateway with 10,000 services cannot afford translating all of it on every change. IncrementalGateway
holds the gateway's IR as pieces (listeners without their virtual hosts, one ServiceRoute per service,
one TLSSecret per certificate), translates only the pieces that changed, and derives the next snapshot
from the last one with Snapshot.evolve. A whole gateway is translated the same way, from nothing
(`IncrementalGateway.of(ir)`, what `translate` and the golden tests run): there is one path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import replace
from typing import TypeVar

from google.protobuf.message import Message

from gateway_xds.cache.resource import Resource, make_resource
from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.ir.agent_tunnels import AgentTunnels, validate_agent_tunnels
from gateway_xds.ir.gateway import (
    GatewayIR,
    validate_backend,
    validate_listener_shell,
    validate_virtual_host,
)
from gateway_xds.ir.listeners import HTTPListener, RouteTable
from gateway_xds.ir.service_route import ServiceRoute
from gateway_xds.ir.tls import TLSSecret, validate_secret
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET
from gateway_xds.translate.agent_tunnels import translate_agent_tunnels
from gateway_xds.translate.clusters import cluster
from gateway_xds.translate.endpoints import load_assignment
from gateway_xds.translate.listeners import listener_resources
from gateway_xds.translate.routes import route_configuration
from gateway_xds.translate.scoped_routes import scope
from gateway_xds.translate.secrets import tls_secret

log = logging.getLogger(__name__)

# (type URL, name, message) -> the message to publish; tests use it to make Envoy reject something.
ResourceHook = Callable[[str, str, Message], Message]

K = TypeVar("K", bound=Hashable)

# type URL -> name -> resource, or None to remove.
_Updates = dict[str, dict[str, Resource | None]]
# What a piece put in the snapshot last: (type URL, name) -> resource.
_Emitted = dict[tuple[str, str], Resource]


class IncrementalGateway:
    def __init__(self, gateway_id: str, hook: ResourceHook | None = None) -> None:
        self.gateway_id = gateway_id
        self._hook = hook
        self._listeners: dict[str, HTTPListener] = {}
        self._services: dict[str, ServiceRoute] = {}
        self._secrets: dict[str, TLSSecret] = {}
        self._tunnels: AgentTunnels | None = None
        self._on_listener: dict[str, set[str]] = {}  # listener name -> service keys
        self._backend_owner: dict[str, str] = {}  # backend name -> service key
        self._domain_owner: dict[tuple[str, str], str] = {}  # (listener, domain) -> service key
        self._scope_owner: dict[str, str] = {}  # per-host virtual host name -> service key
        self._emitted: dict[tuple[str, str], _Emitted] = {}  # piece -> what it published
        self._dirty: set[tuple[str, str]] = set()
        self._snapshot: Snapshot | None = None
        self.errors: dict[str, list[str]] = {}  # service key -> why it is not published

    @classmethod
    def of(cls, ir: GatewayIR, hook: ResourceHook | None = None) -> IncrementalGateway:
        """A whole gateway given at once, as the pieces the provider puts: its listeners, one service
        per virtual host with the backends it names, its certificates and agent tunnels."""
        gateway = cls(ir.gateway_id, hook)
        gateway.set_listeners(ir.listeners)
        gateway.set_agent_tunnels(ir.agent_tunnels)
        backends = {backend.name: backend for backend in ir.backends}
        for listener in ir.listeners:
            for vhost in listener.virtual_hosts:
                canary = backends[vhost.canary.backend] if vhost.canary is not None else None
                route = ServiceRoute(listener.name, vhost, backends[vhost.backend], canary)
                gateway.put_service(f"{listener.name}/{vhost.name}", route)
        for secret in ir.secrets:
            gateway.put_secret(secret)
        return gateway

    # -- changes -----------------------------------------------------------------------------------

    def set_listeners(self, listeners: Iterable[HTTPListener]) -> list[str]:
        """Replace the gateway's listeners (their virtual hosts are ignored: services bring theirs)."""
        wanted: dict[str, HTTPListener] = {}
        errors: list[str] = []
        taken: dict[int | str, str] = {}  # ports and names -> the listener that has them
        for li in listeners:
            shell = li.shell()
            problems = validate_listener_shell(shell)
            claims: list[int | str] = [shell.port, shell.name]
            if shell.tls:
                claims += [shell.tls.port, shell.tls.name]
            problems += [
                f"listener {shell.name!r}: {c!r} is already {taken[c]!r}'s" for c in claims if c in taken
            ]
            if problems:
                errors += problems
                continue
            wanted[shell.name] = shell
            taken.update((claim, shell.name) for claim in claims)
        for name in self._listeners.keys() | wanted.keys():
            old, new = self._listeners.get(name), wanted.get(name)
            if old == new:
                continue
            self._dirty.add(("listener", name))
            if old is None or new is None or old.route_table is not new.route_table:
                # Its services' virtual hosts move between a route configuration and scopes.
                self._dirty.update(("service", key) for key in self._on_listener.get(name, ()))
        self._listeners = wanted
        return errors

    def set_agent_tunnels(self, tunnels: AgentTunnels | None) -> list[str]:
        """Where the gateway takes its agents' tunnels, or None; invalid ones are refused (and the
        gateway takes none)."""
        errors = [] if tunnels is None else validate_agent_tunnels(tunnels)
        taken = {li.port for li in self._listeners.values()} | {
            li.tls.port for li in self._listeners.values() if li.tls is not None
        }
        if tunnels is not None and tunnels.port in taken:
            errors.append(f"agent tunnels: port {tunnels.port} is already a listener's")
        if errors:
            tunnels = None
        if tunnels != self._tunnels:
            if (tunnels is None) != (self._tunnels is None):
                # Services served by agents are valid only while the gateway takes tunnels.
                self._dirty.update(
                    ("service", k) for k, r in self._services.items() if any(b.agent_name for b in r.backends)
                )
            self._tunnels = tunnels
            self._dirty.add(("tunnels", ""))
            # TLS ports take tunnels too.
            self._dirty.update(("listener", n) for n, li in self._listeners.items() if li.tls is not None)
        return errors

    def put_service(self, key: str, route: ServiceRoute) -> list[str]:
        """Add or replace a service; an invalid one is not published (its errors are kept)."""
        if self._services.get(key) == route:
            return self.errors.get(key, [])
        self._forget(key)
        self._services[key] = route
        self._on_listener.setdefault(route.listener, set()).add(key)
        self._dirty.add(("service", key))
        self._dirty.add(("listener", route.listener))
        return []

    def remove_service(self, key: str) -> None:
        route = self._services.get(key)
        if route is None:
            return
        self._forget(key)
        self._dirty.add(("service", key))
        self._dirty.add(("listener", route.listener))

    def _forget(self, key: str) -> None:
        route = self._services.pop(key, None)
        if route is None:
            return
        self._on_listener.get(route.listener, set()).discard(key)
        for backend in route.backends:
            _release(self._backend_owner, backend.name, key)
        _release(self._scope_owner, route.virtual_host.name, key)
        for domain in route.virtual_host.domains:
            _release(self._domain_owner, (route.listener, domain.lower()), key)
        self.errors.pop(key, None)

    def service_keys(self) -> set[str]:
        return set(self._services)

    def put_secret(self, secret: TLSSecret) -> list[str]:
        """Add or replace a certificate; an invalid one is refused (and the old one, if any, kept)."""
        errors = validate_secret(secret)
        if errors or self._secrets.get(secret.name) == secret:
            return errors
        self._secrets[secret.name] = secret
        self._dirty.add(("secret", secret.name))
        return []

    def remove_secret(self, name: str) -> None:
        if self._secrets.pop(name, None) is not None:
            self._dirty.add(("secret", name))

    # -- publishing --------------------------------------------------------------------------------

    def commit(self, revision: int) -> Snapshot:
        """The snapshot with every change so far; raises InconsistentSnapshotError-like ValueError
        only on a bug (pieces are validated and refused one by one)."""
        updates: _Updates = {}
        dirty, self._dirty = self._dirty, set()
        # A refused service may be fine now (e.g. the service that held its domain went away).
        for key in self.errors:
            dirty.add(("service", key))
            dirty.add(("listener", self._services[key].listener))
        # Services first: a listener's SINGLE route configuration needs to know which are valid.
        # In key order, so that of two services claiming one domain the same one always wins.
        for kind, name in sorted(dirty, key=lambda piece: (piece[0] != "service", piece)):
            self._diff(updates, (kind, name), self._resources[kind](self, name))
        if self._snapshot is None:
            resources = {
                t: {n: r for n, r in by_name.items() if r is not None} for t, by_name in updates.items()
            }
            snapshot = Snapshot(revision, resources)
        else:
            snapshot = self._snapshot.evolve(revision, updates)
        errors = snapshot.consistent()
        if errors:
            raise ValueError(f"gateway {self.gateway_id!r}: inconsistent snapshot: " + "; ".join(errors))
        self._snapshot = snapshot
        return snapshot

    def ir(self) -> GatewayIR:
        """The whole IR the published pieces amount to (services refused for errors left out)."""
        published = {k: r for k, r in self._services.items() if k not in self.errors}
        listeners = []
        for name in sorted(self._listeners):
            shell = self._listeners[name]
            vhosts = tuple(
                sorted(
                    (published[k].virtual_host for k in self._on_listener.get(name, ()) if k in published),
                    key=lambda v: v.name,
                )
            )
            listeners.append(replace(shell, virtual_hosts=vhosts))
        backends = tuple(sorted((b for r in published.values() for b in r.backends), key=lambda b: b.name))
        secrets = tuple(self._secrets[name] for name in sorted(self._secrets))
        return GatewayIR(self.gateway_id, tuple(listeners), backends, secrets, self._tunnels)

    # -- pieces ------------------------------------------------------------------------------------

    def _service_resources(self, key: str) -> dict[tuple[str, str], Message]:
        route = self._services.get(key)
        if route is None:
            return {}
        errors = self._check(key, route)
        if errors:
            self.errors[key] = errors
            log.error("gateway %s: service %s not published: %s", self.gateway_id, key, "; ".join(errors))
            return {}
        self.errors.pop(key, None)
        self._claim(key, route)
        out: dict[tuple[str, str], Message] = {}
        for backend in route.backends:
            out[(CLUSTER, backend.name)] = cluster(backend)
            if not backend.agent_name:
                out[(ENDPOINT, backend.name)] = load_assignment(backend)
        shell = self._listeners.get(route.listener)
        if shell is not None and shell.route_table is RouteTable.PER_HOST:
            out[(SCOPED_ROUTE, route.virtual_host.name)] = scope(route.virtual_host)
        return out

    def _listener_resources(self, name: str) -> dict[tuple[str, str], Message]:
        shell = self._listeners.get(name)
        if shell is None:
            return {}
        resources = listener_resources(shell, self._tunnels)
        out: dict[tuple[str, str], Message] = {(LISTENER, li.name): li for li in resources}
        if shell.route_table is RouteTable.SINGLE:
            vhosts = [
                self._services[k].virtual_host
                for k in self._on_listener.get(name, ())
                if k in self._services and k not in self.errors
            ]
            out[(ROUTE, name)] = route_configuration(name, vhosts)
        return out

    def _secret_resources(self, name: str) -> dict[tuple[str, str], Message]:
        secret = self._secrets.get(name)
        return {} if secret is None else {(SECRET, name): tls_secret(secret)}

    def _tunnel_resources(self, _: str) -> dict[tuple[str, str], Message]:
        ir = GatewayIR(self.gateway_id, agent_tunnels=self._tunnels)
        return {
            (t, name): m for t, by_name in translate_agent_tunnels(ir).items() for name, m in by_name.items()
        }

    _resources: Mapping[str, Callable[[IncrementalGateway, str], Mapping[tuple[str, str], Message]]] = {
        "service": _service_resources,
        "listener": _listener_resources,
        "secret": _secret_resources,
        "tunnels": _tunnel_resources,
    }

    def _diff(
        self, updates: _Updates, piece: tuple[str, str], fresh: Mapping[tuple[str, str], Message]
    ) -> None:
        before = self._emitted.pop(piece, {})
        now: _Emitted = {}
        for (type_url, name), message in fresh.items():
            if self._hook is not None:
                message = self._hook(type_url, name, message)
            resource = make_resource(type_url, name, message)
            old = before.get((type_url, name))
            if old is not None and old.version == resource.version:
                resource = old
            else:
                updates.setdefault(type_url, {})[name] = resource
            now[(type_url, name)] = resource
        for type_url, name in before.keys() - now.keys():
            updates.setdefault(type_url, {})[name] = None
        if now:
            self._emitted[piece] = now

    def _check(self, key: str, route: ServiceRoute) -> list[str]:
        errors: list[str] = []
        for backend in route.backends:
            errors += validate_backend(backend)
            if backend.agent_name and self._tunnels is None:
                errors.append(
                    f"backend {backend.name!r} is served by agents but the gateway takes no tunnels"
                )
            owner = self._backend_owner.get(backend.name)
            if owner not in (None, key):
                errors.append(f"backend {backend.name!r} is already {owner!r}'s")
        shell = self._listeners.get(route.listener)
        if shell is None:
            return errors
        vhost = route.virtual_host
        errors += validate_virtual_host(shell, vhost)
        if vhost.backend != route.backend.name:
            errors.append(f"virtual host {vhost.name!r} must route to its own backend {route.backend.name!r}")
        if (vhost.canary.backend if vhost.canary else None) != (route.canary.name if route.canary else None):
            errors.append(f"virtual host {vhost.name!r} must send its canary's share to its canary backend")
        for domain in vhost.domains:
            owner = self._domain_owner.get((shell.name, domain.lower()))
            if owner not in (None, key):
                errors.append(f"domain {domain!r} on listener {shell.name!r} is already {owner!r}'s")
        if shell.route_table is RouteTable.PER_HOST:
            owner = self._scope_owner.get(vhost.name)
            if owner not in (None, key):
                errors.append(f"per-host virtual host {vhost.name!r} is already {owner!r}'s")
        return errors

    def _claim(self, key: str, route: ServiceRoute) -> None:
        for backend in route.backends:
            self._backend_owner[backend.name] = key
        shell = self._listeners.get(route.listener)
        if shell is None:
            return
        for domain in route.virtual_host.domains:
            self._domain_owner[(shell.name, domain.lower())] = key
        if shell.route_table is RouteTable.PER_HOST:
            self._scope_owner[route.virtual_host.name] = key


def _release(index: dict[K, str], claim: K, key: str) -> None:
    if index.get(claim) == key:
        del index[claim]
