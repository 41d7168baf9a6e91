"""Where cloud gateway hosts are told to find gateway_xds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.common.settings import Settings
from services.provisioner.app import public_xds_endpoint
from services.provisioner.hosts.plan import XdsEndpoint


def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("GATEHOUSE_HOME", str(tmp_path))
    return dataclasses.replace(Settings.from_env(), xds_host="0.0.0.0", xds_port=50052)


def test_hosts_use_the_public_xds_address_when_one_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEHOUSE_XDS_PUBLIC_ADDRESS", "xds.example.com:443")
    assert public_xds_endpoint(settings(tmp_path, monkeypatch), 50052) == XdsEndpoint("xds.example.com", 443)
    monkeypatch.setenv("GATEHOUSE_XDS_PUBLIC_ADDRESS", "[2001:db8::1]:50052")
    assert public_xds_endpoint(settings(tmp_path, monkeypatch), 50052) == XdsEndpoint("2001:db8::1", 50052)


def test_otherwise_the_listen_address_and_bound_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEHOUSE_XDS_PUBLIC_ADDRESS", raising=False)
    assert public_xds_endpoint(settings(tmp_path, monkeypatch), 41000) == XdsEndpoint("0.0.0.0", 41000)


def test_several_copies_of_gateway_xds_are_all_given_to_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "GATEHOUSE_XDS_PUBLIC_ADDRESS", "xds-a.example.com:50052, [2001:db8::2]:50052,10.0.0.9:443"
    )
    assert public_xds_endpoint(settings(tmp_path, monkeypatch), 50052) == XdsEndpoint(
        "xds-a.example.com", 50052, (("2001:db8::2", 50052), ("10.0.0.9", 443))
    )


@pytest.mark.parametrize("value", ["xds.example.com", "xds.example.com:http", "a:1,b", ":50052", "a:70000"])
def test_a_public_address_that_is_not_host_port_stops_the_server_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GATEHOUSE_XDS_PUBLIC_ADDRESS", value)
    with pytest.raises(SystemExit) as stopped:
        public_xds_endpoint(settings(tmp_path, monkeypatch), 50052)
    message = str(stopped.value)
    assert message.startswith("error: GATEHOUSE_XDS_PUBLIC_ADDRESS:") and "\n" not in message
