"""Which listeners log their requests to the control plane, and how a share of them is sampled."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from gatehouse import access_logs
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.translate.listeners import _manager

LISTENER = HTTPListener("http", "127.0.0.1", 8080, authorization_cluster="gatehouse_xds")


def _logs(listener: HTTPListener) -> list[object]:
    manager: hcm.HttpConnectionManager = _manager(listener, "http")
    return list(manager.access_log)


def test_every_request_by_default() -> None:
    (logged,) = _logs(LISTENER)
    assert not logged.HasField("filter")  # type: ignore[attr-defined]


def test_a_share_is_sampled_in_envoy() -> None:
    (logged,) = _logs(dataclasses.replace(LISTENER, access_log_percent=10))
    sampled = logged.filter.runtime_filter  # type: ignore[attr-defined]
    assert sampled.percent_sampled.numerator == 10 and sampled.use_independent_randomness


@pytest.mark.parametrize(
    "listener", [dataclasses.replace(LISTENER, access_log_percent=0), HTTPListener("h", "a", 1)]
)
def test_none_when_off_or_without_a_control_plane(listener: HTTPListener) -> None:
    assert _logs(listener) == []


@pytest.mark.parametrize("raw", ["-1", "101", "ten", "5.5"])
def test_a_bad_share_is_one_line(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(access_logs.PERCENT_ENV, raw)
    access_logs.configured_percent.cache_clear()
    try:
        with pytest.raises(SystemExit, match="is not a whole number from 0 to 100"):
            access_logs.configured_percent()
    finally:
        access_logs.configured_percent.cache_clear()
