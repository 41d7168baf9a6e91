"""A resource Envoy refuses is settled: the rest of the view is applied, acknowledged revisions keep
advancing, and the refusal stays reported until that resource changes or goes. Both variants, driven
by an Envoy stand-in that refuses to bind the listeners of some ports and accepts everything else."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.routes import VirtualHost
from gateway_xds.publish import snapshot_from_ir
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from gateway_xds.server.delta_state import DeltaStreamState
from gateway_xds.server.protocol import StreamProtocol
from gateway_xds.server.rejections import refused
from gateway_xds.server.reporter import Rejection
from gateway_xds.server.sotw_state import SotwStreamState
from gateway_xds.testing.reporters import RecordingReporter

NODE, GATEWAY = "gateway/gw-1/0", "gw-1"
BOUND_ELSEWHERE = "127.0.0.2"
# Envoy's message when listeners cannot be added (lds_api.cc), one "<name>: <reason>" per listener.
IN_USE = "cannot bind '{address}:{port}': Address already in use"
_MESSAGES = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def gateway(ports: dict[str, int], upstream: int = 8081, moved: Iterable[str] = ()) -> GatewayIR:
    """One listener `port-<n>` per service; the listeners of `moved` services bind elsewhere."""
    return GatewayIR(
        gateway_id=GATEWAY,
        listeners=tuple(
            HTTPListener(
                f"port-{port}",
                BOUND_ELSEWHERE if name in moved else "127.0.0.1",
                port,
                (VirtualHost(name, ("*",), name),),
            )
            for name, port in ports.items()
        ),
        backends=tuple(Backend(name, (Endpoint("127.0.0.1", upstream),)) for name in ports),
    )


TWO = {"svc-a": 5001, "svc-b": 5002}


def _unpack(type_url: str, packed: any_pb2.Any) -> listener_pb2.Listener | cluster_pb2.Cluster:
    message = _MESSAGES[type_url]()
    packed.Unpack(message)
    return message


def _route_names(listener: listener_pb2.Listener) -> set[str]:
    names = set()
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            manager = http_connection_manager_pb2.HttpConnectionManager()
            if network_filter.typed_config.Unpack(manager) and manager.HasField("rds"):
                names.add(manager.rds.route_config_name)
    return names


class Envoy:
    """Answers each response as Envoy would: it cannot bind the listeners of `blocked` ports (their
    names go into one NACK message, the others are applied), accepts everything else, and asks for
    the endpoints and route configurations of what it has."""

    def __init__(
        self, state: StreamProtocol[Any, Any], reporter: RecordingReporter, blocked: set[int]
    ) -> None:
        self.state = state
        self.reporter = reporter
        self.blocked = blocked
        self.sent: list[tuple[str, set[str]]] = []  # (type, names) of every response, in order
        self.nacks = 0

    def refuses(self, listener: listener_pb2.Listener) -> bool:
        return listener.address.socket_address.port_value in self.blocked

    def connect(self) -> None:
        raise NotImplementedError

    def answer(self, response: Any) -> list[Any]:
        raise NotImplementedError

    def run(self, responses: list[Any]) -> None:
        queue = deque(responses)
        for _ in range(200):
            if not queue:
                return
            response = queue.popleft()
            for request in self.answer(response):
                queue.extend(self.state.on_request(request))
        raise AssertionError("the control plane keeps pushing: " + repr(self.sent[-6:]))


class SotwEnvoy(Envoy):
    def __init__(self, blocked: set[int]) -> None:
        reporter = RecordingReporter()
        super().__init__(SotwStreamState(NODE, GATEWAY, reporter), reporter, blocked)
        self.names: dict[str, list[str]] = {ENDPOINT: [], ROUTE: []}
        self.nonces: dict[str, str] = {}
        self.versions: dict[str, str] = {}

    def connect(self) -> None:
        for type_url in (CLUSTER, LISTENER):
            self.run(self.state.on_request(discovery_pb2.DiscoveryRequest(type_url=type_url)))

    def answer(self, response: discovery_pb2.DiscoveryResponse) -> list[discovery_pb2.DiscoveryRequest]:
        type_url = response.type_url
        resources = [_unpack(type_url, r) for r in response.resources] if type_url in _MESSAGES else []
        names = {getattr(r, "name", "") or getattr(r, "cluster_name", "") for r in resources}
        self.sent.append((type_url, names))
        self.nonces[type_url] = response.nonce
        refused_listeners = [r for r in resources if type_url == LISTENER and self.refuses(r)]
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url, response_nonce=response.nonce, resource_names=self.names.get(type_url, [])
        )
        if refused_listeners:
            self.nacks += 1
            request.version_info = self.versions.get(type_url, "")
            request.error_detail.CopyFrom(status_pb2.Status(message=_in_use(refused_listeners)))
        else:
            request.version_info = self.versions[type_url] = response.version_info
        follow = [request]
        if type_url == CLUSTER:
            follow += self._subscribe(ENDPOINT, names)
        elif type_url == LISTENER:
            applied = [r for r in resources if r not in refused_listeners]
            follow += self._subscribe(ROUTE, {n for r in applied for n in _route_names(r)})
        return follow

    def _subscribe(self, type_url: str, names: set[str]) -> list[discovery_pb2.DiscoveryRequest]:
        if sorted(names) == self.names[type_url]:
            return []
        self.names[type_url] = sorted(names)
        return [
            discovery_pb2.DiscoveryRequest(
                type_url=type_url,
                resource_names=self.names[type_url],
                response_nonce=self.nonces.get(type_url, ""),
                version_info=self.versions.get(type_url, ""),
            )
        ]


class DeltaEnvoy(Envoy):
    def __init__(self, blocked: set[int]) -> None:
        reporter = RecordingReporter()
        super().__init__(DeltaStreamState(NODE, GATEWAY, reporter), reporter, blocked)
        self.names: dict[str, set[str]] = {ENDPOINT: set(), ROUTE: set()}

    def connect(self) -> None:
        for type_url in (CLUSTER, LISTENER):
            self.run(self.state.on_request(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)))

    def answer(self, response: Any) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        response = discovery_pb2.DeltaDiscoveryResponse.FromString(response.SerializeToString())
        type_url = response.type_url
        resources = (
            [_unpack(type_url, r.resource) for r in response.resources] if type_url in _MESSAGES else []
        )
        self.sent.append((type_url, {r.name for r in response.resources}))
        refused_listeners = [r for r in resources if type_url == LISTENER and self.refuses(r)]
        request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        if refused_listeners:
            self.nacks += 1
            request.error_detail.CopyFrom(status_pb2.Status(message=_in_use(refused_listeners)))
        follow = [request]
        if type_url == CLUSTER:
            follow += self._subscribe(ENDPOINT, {r.name for r in resources})
        elif type_url == LISTENER:
            applied = [r for r in resources if r not in refused_listeners]
            follow += self._subscribe(ROUTE, {n for r in applied for n in _route_names(r)})
        return follow

    def _subscribe(self, type_url: str, names: set[str]) -> list[discovery_pb2.DeltaDiscoveryRequest]:
        new = sorted(names - self.names[type_url])
        if not new:
            return []
        self.names[type_url] |= names
        return [discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=new)]


def _in_use(listeners: list[listener_pb2.Listener]) -> str:
    parts = [
        f"{li.name}: "
        + IN_USE.format(address=li.address.socket_address.address, port=li.address.socket_address.port_value)
        for li in listeners
    ]
    return "Error adding/updating listener(s) " + ", ".join(parts)


@pytest.fixture(params=["sotw", "delta"])
def envoy(request: pytest.FixtureRequest) -> Envoy:
    return SotwEnvoy({5001}) if request.param == "sotw" else DeltaEnvoy({5001})


def publish(envoy: Envoy, ir: GatewayIR, revision: int) -> None:
    envoy.run(envoy.state.on_snapshot(snapshot_from_ir(ir, revision)))


def acked(reporter: RecordingReporter) -> list[int]:
    return [r.revision for r in reporter.of_kind("acked") if r.revision is not None]


def refusals(reporter: RecordingReporter) -> tuple[Rejection, ...]:
    """What the node refuses, as last reported."""
    reports = reporter.of_kind("rejections")
    return reports[-1].rejections if reports else ()


def listener_responses(envoy: Envoy) -> int:
    return sum(1 for type_url, _ in envoy.sent if type_url == LISTENER)


def test_a_nack_naming_one_of_two_listeners_settles_the_view(envoy: Envoy) -> None:
    reporter = envoy.reporter
    publish(envoy, gateway(TWO), 1)
    envoy.connect()
    assert envoy.nacks == 1
    assert acked(reporter) == [1]
    (rejection,) = refusals(reporter)
    assert (rejection.type_url, rejection.name) == (LISTENER, "port-5001")
    assert rejection.reason == "cannot bind '127.0.0.1:5001': Address already in use"
    assert rejection.message.startswith("Error adding/updating listener(s) port-5001: ")
    # The other listener's routes were asked for and applied; the refused one's never were.
    routes = set().union(*(names for type_url, names in envoy.sent if type_url == ROUTE))
    assert routes == {"port-5002"}
    # Rejections are reported before the `acked` they are part of.
    kinds = [r.kind for r in reporter.reports if r.kind in ("rejections", "acked")]
    assert kinds[:2] == ["rejections", "acked"]


def test_acked_revisions_advance_past_a_refused_listener(envoy: Envoy) -> None:
    reporter = envoy.reporter
    publish(envoy, gateway(TWO), 1)
    envoy.connect()
    # Another service on another port: its listener goes out (Delta re-offers the refused one with
    # it, SotW sends the whole type), Envoy refuses port-5001 again and applies the rest.
    publish(envoy, gateway({**TWO, "svc-c": 5003}), 2)
    assert acked(reporter)[-1] == 2
    assert any("port-5003" in names for type_url, names in envoy.sent if type_url == ROUTE)
    # An endpoint change, and a change that is no change at all.
    publish(envoy, gateway({**TWO, "svc-c": 5003}, upstream=9999), 3)
    publish(envoy, gateway({**TWO, "svc-c": 5003}, upstream=9999), 4)
    assert acked(reporter) == [1, 2, 3, 4]
    assert [r.name for r in refusals(reporter)] == ["port-5001"]
    # One listener response per listener change, whatever Envoy says: no push loop on NACKs.
    assert listener_responses(envoy) == 2
    assert envoy.nacks == 2


def test_the_refusal_stays_reported_until_that_listener_changes(envoy: Envoy) -> None:
    reporter = envoy.reporter
    publish(envoy, gateway(TWO), 1)
    envoy.connect()
    # Clusters and endpoints acknowledged: the listener's refusal is still there.
    publish(envoy, gateway(TWO, upstream=9999), 2)
    assert acked(reporter)[-1] == 2
    assert [r.name for r in refusals(reporter)] == ["port-5001"]
    # Whatever held the port lets it go: nothing is re-sent on its own.
    envoy.blocked.clear()
    sent = len(envoy.sent)
    publish(envoy, gateway(TWO, upstream=9999), 3)
    assert len(envoy.sent) == sent and acked(reporter)[-1] == 3
    assert [r.name for r in refusals(reporter)] == ["port-5001"]
    # The listener changes: it goes out again, is applied, and the refusal is over.
    publish(envoy, gateway(TWO, upstream=9999, moved={"svc-a"}), 4)
    assert acked(reporter)[-1] == 4
    assert refusals(reporter) == ()
    assert reporter.of_kind("rejections")[-1].rejections == ()


def test_a_refused_listener_that_goes_away_is_no_longer_reported(envoy: Envoy) -> None:
    reporter = envoy.reporter
    publish(envoy, gateway(TWO), 1)
    envoy.connect()
    assert acked(reporter) == [1] and [r.name for r in refusals(reporter)] == ["port-5001"]
    publish(envoy, gateway({"svc-b": 5002}), 2)
    assert acked(reporter)[-1] == 2
    assert refusals(reporter) == ()


def test_a_new_stream_reports_its_own_refusals_before_its_first_ack(envoy: Envoy) -> None:
    """What an earlier stream of the node reported is replaced, even by nothing."""
    envoy.blocked.clear()
    reporter = envoy.reporter
    publish(envoy, gateway(TWO), 1)
    envoy.connect()
    assert [r.kind for r in reporter.reports] == ["rejections", "acked"]
    assert refusals(reporter) == ()


# -- reading Envoy's message --------------------------------------------------------------------------


def test_the_names_in_the_message_are_the_refused_ones_each_with_its_own_reason() -> None:
    message = (
        "Error adding/updating listener(s) port-5001: cannot bind '127.0.0.2:5001': Address already in "
        "use, port-5003: cannot bind '127.0.0.2:5003': Permission denied"
    )
    found = refused(
        LISTENER, {"port-5001": "v1", "port-5002": "v2", "port-5003": None, "port-500": "v"}, message
    )
    assert {name: (r.version, r.reason) for name, r in found.items()} == {
        "port-5001": ("v1", "cannot bind '127.0.0.2:5001': Address already in use"),
        "port-5003": (None, "cannot bind '127.0.0.2:5003': Permission denied"),
    }
    assert all(r.message == message and r.type_url == LISTENER for r in found.values())


def test_a_name_only_mentioned_gives_way_to_a_name_with_its_reason() -> None:
    message = "Error adding/updating listener(s) https: invalid http filter chain for http"
    assert set(refused(LISTENER, {"http": "1", "https": "2"}, message)) == {"https"}
    assert refused(LISTENER, {"http": "1"}, "bad http settings")["http"].reason == "bad http settings"


def test_a_message_naming_none_of_the_resources_refuses_them_all() -> None:
    found = refused(CLUSTER, {"svc_main_a": "1", "svc_main_b": None}, "Proto constraint validation failed")
    assert {name: r.version for name, r in found.items()} == {"svc_main_a": "1", "svc_main_b": None}
    assert {r.reason for r in found.values()} == {"Proto constraint validation failed"}
