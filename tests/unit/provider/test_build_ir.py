"""Registry objects → IR: the port-mapping mode and the domain mode side by side."""

from __future__ import annotations

from typing import Any

from gatehouse.v1 import resources_pb2
from gateway_xds.ir.backends import Endpoint
from gateway_xds.provider.build import gateway_ir


def _gateway(**status: Any) -> resources_pb2.Gateway:
    return resources_pb2.Gateway(id="gw-1", status=resources_pb2.GatewayStatus(**status))


def _service(name: str, **spec: Any) -> resources_pb2.Service:
    return resources_pb2.Service(
        id=f"svc-{name}",
        project="main",
        name=name,
        spec=resources_pb2.ServiceSpec(**spec),
    )


def test_no_listeners_until_the_host_reports_where_it_listens() -> None:
    ir = gateway_ir(_gateway(), [_service("a", gateway_port=5001)], {})
    assert ir.listeners == () and [b.name for b in ir.backends] == ["svc_main_a"]


def test_port_mapped_and_domain_services() -> None:
    gateway = _gateway(listen_address="127.0.0.1", http_port=18080)
    services = [
        _service("mapped", gateway_port=5001),
        _service("on80", gateway_port=80),
        _service("chat", hostname="chat.example.com"),
    ]
    replicas = {
        "svc-mapped": [
            resources_pb2.Replica(address="127.0.0.1:8000", ready=True),
            resources_pb2.Replica(address="127.0.0.1:8001", ready=False),
            resources_pb2.Replica(address="pod.local:8000", ready=True),
        ]
    }
    ir = gateway_ir(gateway, services, replicas)
    assert ir.validate() == []
    listeners = {listener.name: listener for listener in ir.listeners}
    assert listeners["http"].port == 18080 and listeners["port-5001"].port == 5001
    assert {vh.domains for vh in listeners["http"].virtual_hosts} == {("chat.example.com",), ("*",)}
    assert [vh.backend for vh in listeners["port-5001"].virtual_hosts] == ["svc_main_mapped"]
    mapped = next(b for b in ir.backends if b.name == "svc_main_mapped")
    assert mapped.endpoints == (Endpoint("127.0.0.1", 8000),)
