# ruff: noqa: E501
"""Configuration errors are written for people: where, what is wrong, what to write instead, and
nothing of the validator's internals. Limits and dstack's forms of `env`."""

from __future__ import annotations

from typing import Any

import pytest

from gatehouse import limits
from services.common.errors import InvalidArgument
from services.registry.configurations import GatewayConfig, ServiceConfig, parse_configuration

SERVICE = {"type": "service", "port": 8000}
GATEWAY = {"type": "gateway", "backend": "local", "region": "local"}
INTERNALS = (
    "Input should",
    "literal[",
    ".bool",
    ".int",
    ".str",
    "0.01666",
    "validation error",
    "Value error",
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({**SERVICE, "https": "maybe"}, "`https`: use true, false or auto, not 'maybe'"),
        ({**SERVICE, "rate_limits": [{"rps": -5}]}, "`rate_limits[0].rps`: use at least 1/60 (one request a minute), not -5"),
        ({**SERVICE, "rate_limits": [{"rps": "fast"}]}, "`rate_limits[0].rps`: use a number"),
        ({**SERVICE, "rate_limits": [{"rps": 1, "burst": -1}]}, "`rate_limits[0].burst`: use 0 or more, not -1"),
        ({**SERVICE, "rate_limits": [{"rsp": 1}]}, "unknown field `rate_limits[0].rsp` (did you mean `rps`?)"),
        ({**SERVICE, "rate_limits": [{"rps": 1, "key": "cookie"}]}, "`rate_limits[0].key`: use ip_address or {type: header, header: NAME}"),
        ({**SERVICE, "rate_limits": [{"rps": 1, "key": {"type": "header"}}]}, "needs the header's name"),
        ({**SERVICE, "rate_limits": [{"rps": 1, "key": {"type": "header", "header": "a b"}}]}, "`rate_limits[0].key.header`: 'a b' is not a header name"),
        ({**SERVICE, "rate_limits": [{"rps": 1, "scope": "regional"}]}, "`rate_limits[0].scope`: use local or global, not 'regional'"),
        ({**SERVICE, "rate_limits": {"rps": 1}}, "`rate_limits`: use a list"),
        ({**SERVICE, "replicas": -1}, "`replicas`: -1 is not a replica count"),
        ({**SERVICE, "replicas": True}, "`replicas`: use a number (2) or a range (1..4), not true"),
        ({**SERVICE, "replicas": 0}, "`replicas: 0` runs no replica"),
        ({**SERVICE, "replicas": "3..1"}, "the minimum is above the maximum"),
        ({**SERVICE, "replicas": 101}, "at most 100"),
        ({**SERVICE, "port": [1]}, '`port`: use 8000 or "<gateway-port>:<app-port>"'),
        ({**SERVICE, "port": True}, "`port`: use 8000"),
        ({**SERVICE, "port": 70000}, "port 70000 is out of range"),
        ({**SERVICE, "gateway": 5}, "`gateway`: use a gateway name"),
        ({**SERVICE, "auth": "yes please"}, "`auth`: use true or false, not 'yes please'"),
        ({**SERVICE, "commands": "python -m http.server"}, "`commands`: use a list of shell commands"),
        ({**SERVICE, "env": {"A": {"b": 1}}}, "`env`: A must be text, not a mapping"),
        ({**SERVICE, "env": ["A"]}, "`env`: item 1 ('A') has no value: write A=VALUE"),
        ({**SERVICE, "env": ["A=1", "A=2"]}, "`env`: A is set twice"),
        ({**SERVICE, "env": {"1A": "x"}}, "'1A' is not a variable name"),
        ({**SERVICE, "env": "A=1"}, "`env`: use a mapping (KEY: VALUE) or a list (- KEY=VALUE)"),
        ({**SERVICE, "scaling": {"metric": "cpu", "target": 0}, "replicas": "1..2"}, "`scaling.metric`: use rps or concurrency, not 'cpu'; `scaling.target`: use more than 0, not 0"),
        ({**SERVICE, "gateway": "${{ secret.GATEWAY_IP }}"}, "`gateway`: ${{ secret.GATEWAY_IP }} is not an interpolation Gatehouse knows: did you mean ${{ secrets.GATEWAY_IP }}?"),
        ({**SERVICE, "env": {"A": "${{ secrets.X }"}}, "`env.A`: '${{ secrets.X }' is not closed"),
        ({**SERVICE, "commands": ["echo ${{ env.HOME }}"]}, "only ${{ secrets.NAME }} is resolved"),
        ({"type": "servise", "port": 8000}, "`type` must be gateway or service, not 'servise' (did you mean service?)"),
        ({"port": 8000}, "`type` is required"),
        ({**GATEWAY, "certificate": {"type": "selfsigned"}}, "`certificate`: use lets-encrypt (the default), {type: acm, arn: ARN} or null, not type 'selfsigned'"),
        ({**GATEWAY, "backend": "aws", "certificate": {"type": "acm"}}, "`certificate.arn` is required"),
        ({**GATEWAY, "certificate": "acm"}, "acm needs the certificate's ARN"),
        ({**GATEWAY, "replicas": 0}, "`replicas`: use 1 or more, not 0"),
        ({**GATEWAY, "tags": ["a"]}, "`tags`: use a mapping"),
        ({**GATEWAY, "default": "sure"}, "`default`: use true or false, not 'sure'"),
        ({**GATEWAY, "backend": 5}, "`backend`: use text, not 5"),
        ({**GATEWAY, "regoin": "x"}, "unknown field `regoin` (did you mean `region`?)"),
    ],
)  # fmt: skip
def test_messages_say_what_to_write(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_configuration(data)
    message = caught.value.message
    assert expected in message
    assert "\n" not in message and not any(internal in message for internal in INTERNALS), message


def test_dstacks_list_form_of_env() -> None:
    config = parse_configuration(
        {**SERVICE, "env": ["MODE=prod", "TOKEN=${{ secrets.T }}", "EMPTY=", "X=a=b"]}
    )
    assert isinstance(config, ServiceConfig)
    assert config.env == {"MODE": "prod", "TOKEN": "${{ secrets.T }}", "EMPTY": "", "X": "a=b"}


def test_env_values_are_written_as_text() -> None:
    config = parse_configuration({**SERVICE, "env": {"PORT": 8000, "DEBUG": True, "RATIO": 0.5}})
    assert isinstance(config, ServiceConfig)
    assert config.env == {"PORT": "8000", "DEBUG": "true", "RATIO": "0.5"}


def test_one_request_a_minute_as_people_write_it() -> None:
    config = parse_configuration({**SERVICE, "rate_limits": [{"rps": 0.0167}]})
    assert isinstance(config, ServiceConfig) and config.rate_limits[0].rps == pytest.approx(1 / 60, rel=0.01)


def test_the_certificate_by_its_type_alone() -> None:
    config = parse_configuration({**GATEWAY, "certificate": "lets-encrypt"})
    assert isinstance(config, GatewayConfig) and config.certificate is not None
    assert config.certificate.type == "lets-encrypt"


def test_a_configuration_has_a_size_limit() -> None:
    # The 5 MB configuration: 46,000 env entries.
    huge = {**SERVICE, "env": {f"VAR_{index}": "x" * 100 for index in range(46_000)}}
    with pytest.raises(InvalidArgument) as caught:
        parse_configuration(huge)
    assert caught.value.message == "the configuration is 5 MiB: at most 256 KiB"
    assert limits.size(limits.CONFIGURATION_BYTES) == "256 KiB"


def test_a_replicas_environment_has_a_size_limit() -> None:
    env = {f"VAR_{index}": "x" * 1000 for index in range(200)}
    with pytest.raises(InvalidArgument) as caught:
        parse_configuration({**SERVICE, "env": env})
    assert "`env` is 197 KiB: a replica's environment is at most 128 KiB" in caught.value.message


def test_stored_specs_from_older_rules_still_load() -> None:
    """Rules for new input (replicas: 0, env size) do not stop a stored spec from loading."""
    assert ServiceConfig.model_validate({**SERVICE, "replicas": 0}).replica_range == (0, 0)
