"""GatewayIR.validate() and the dict codec."""

import dataclasses
from collections.abc import Callable

import pytest

from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.codec import ir_from_dict
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.routes import VirtualHost

replace_listener = dataclasses.replace


def valid_ir() -> GatewayIR:
    return GatewayIR(
        gateway_id="gw-1",
        listeners=(
            HTTPListener(
                "http-80",
                "0.0.0.0",
                80,
                (
                    VirtualHost("a", ("a.example.com",), "svc-p-a"),
                    VirtualHost("any", ("*",), "svc-p-a"),
                ),
            ),
        ),
        backends=(Backend("svc-p-a", (Endpoint("127.0.0.1", 8080),)),),
    )


def test_valid_ir_has_no_errors() -> None:
    assert valid_ir().validate() == []


def test_ir_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        valid_ir().gateway_id = "other"  # type: ignore[misc]


def test_validate_collects_every_error_at_once() -> None:
    ir = GatewayIR(
        gateway_id="gw-1",
        listeners=(
            HTTPListener(
                "l1",
                "0.0.0.0",
                80,
                (
                    VirtualHost("a", ("a.example.com",), "svc-a"),
                    VirtualHost("b", ("A.example.com",), "svc-missing"),
                ),
            ),
            HTTPListener("l1", "0.0.0.0", 80),
            HTTPListener("l2", "0.0.0.0", 70000),
        ),
        backends=(Backend("svc-a"),),
    )
    assert ir.validate() == [
        "duplicate listener name 'l1'",
        "duplicate listener port 80",
        "listener 'l1': duplicate domain 'a.example.com'",
        "listener 'l1' virtual host 'b': unknown backend 'svc-missing'",
        "listener 'l2': port 70000 out of range 1-65535",
    ]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda ir: dataclasses.replace(ir, gateway_id=""), "gateway_id must not be empty"),
        (
            lambda ir: dataclasses.replace(ir, backends=ir.backends * 2),
            "duplicate backend name 'svc-p-a'",
        ),
        (
            lambda ir: dataclasses.replace(ir, backends=(Backend("svc-p-a", (Endpoint("db.local", 5432),)),)),
            "backend 'svc-p-a': 'db.local' is not an IP address",
        ),
        (
            lambda ir: dataclasses.replace(ir, backends=(Backend("svc-p-a", (Endpoint("10.0.0.1", 0),)),)),
            "backend 'svc-p-a': port 0 out of range 1-65535",
        ),
        (
            lambda ir: dataclasses.replace(ir, backends=(Backend("svc-p-a", connect_timeout_ms=0),)),
            "backend 'svc-p-a': connect_timeout_ms must be positive",
        ),
        (
            lambda ir: dataclasses.replace(ir, listeners=(replace_listener(ir.listeners[0], address="any"),)),
            "listener 'http-80': 'any' is not an IP address",
        ),
    ],
)
def test_validate_single_errors(change: Callable[[GatewayIR], GatewayIR], error: str) -> None:
    assert change(valid_ir()).validate() == [error]


@pytest.mark.parametrize(
    ("domains", "errors"),
    [
        ((), ["needs at least one domain"]),
        (("a b.com",), ["invalid domain 'a b.com'"]),
        (("a.*.com",), ["invalid domain 'a.*.com'"]),
        (("**",), ["invalid domain '**'"]),
        (("*.example.com", "example.*", "example.com:8080"), []),
    ],
)
def test_validate_domains(domains: tuple[str, ...], errors: list[str]) -> None:
    ir = valid_ir()
    listener = HTTPListener("l", "127.0.0.1", 5001, (VirtualHost("v", domains, "svc-p-a"),))
    ir = dataclasses.replace(ir, listeners=(listener,))
    assert ir.validate() == [f"listener 'l' virtual host 'v': {e}" for e in errors]


def test_duplicate_virtual_host_names() -> None:
    vhosts = (VirtualHost("v", ("a.com",), "svc-p-a"), VirtualHost("v", ("b.com",), "svc-p-a"))
    ir = dataclasses.replace(valid_ir(), listeners=(HTTPListener("l", "127.0.0.1", 5001, vhosts),))
    assert ir.validate() == ["listener 'l': duplicate virtual host 'v'"]


def test_codec_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown keys \['listner'\]"):
        ir_from_dict({"gateway_id": "gw", "listner": []})
    with pytest.raises(ValueError, match=r"listener: missing \['port'\]"):
        ir_from_dict({"gateway_id": "gw", "listeners": [{"name": "l", "address": "0.0.0.0"}]})


def test_codec_defaults() -> None:
    ir = ir_from_dict({"gateway_id": "gw", "backends": [{"name": "svc-a"}]})
    assert ir == GatewayIR("gw", (), (Backend("svc-a", (), 5000),))
