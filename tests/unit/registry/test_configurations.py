"""The configuration models: defaults and rules that need no server."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.registry.configurations import GatewayConfig, ServiceConfig, parse_configuration, parse_port


@pytest.mark.parametrize(
    ("value", "expected"),
    [(8000, (80, 8000)), ("8000", (80, 8000)), ("5001:8000", (5001, 8000)), (" 5001 : 8000 ", (5001, 8000))],
)
def test_ports(value: int | str, expected: tuple[int, int]) -> None:
    assert parse_port(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "1:2:3", "0", "65536", "80:0", "-1"])
def test_bad_ports(value: str) -> None:
    with pytest.raises(ValueError):
        parse_port(value)


def test_gateway_defaults_follow_the_seed() -> None:
    config = parse_configuration(
        {"type": "gateway", "backend": "aws", "region": "eu-west-1", "domain": "*.Ex.com"}
    )
    assert isinstance(config, GatewayConfig)
    assert config.domain == "ex.com" and config.public_ip
    assert config.certificate is not None and config.certificate.type == "lets-encrypt"
    assert config.name is None and config.replicas == 1
    no_cert = parse_configuration({"type": "gateway", "backend": "aws", "region": "r", "certificate": None})
    assert isinstance(no_cert, GatewayConfig) and no_cert.certificate is None


def test_service_defaults() -> None:
    config = parse_configuration({"type": "service", "port": 8000})
    assert isinstance(config, ServiceConfig)
    assert config.https is True and config.auth is True and config.replicas == 1
    assert not config.maps_port and config.ports == (80, 8000)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_configuration({"type": "gateway", "backend": "mars", "regoin": "x"})
    message = caught.value.message
    assert (
        "not a backend" in message
        and "`region` is required" in message
        and "did you mean `region`" in message
    )
