"""Which listeners log their requests to the control plane, and how a share of successes is sampled
(errors always logged)."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.type.v3 import percent_pb2

from gatehouse import access_logs
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.translate.listeners import _manager

LISTENER = HTTPListener("http", "127.0.0.1", 8080, authorization_cluster="gatehouse_xds")


def _logs(listener: HTTPListener) -> list[object]:
    manager: hcm.HttpConnectionManager = _manager(listener, "http")
    return list(manager.access_log)


def _filters(listener: HTTPListener) -> list[accesslog_pb2.AccessLogFilter]:
    (logged,) = _logs(listener)
    return list(logged.filter.or_filter.filters)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("percent", "numerator"), [(100, 1_000_000), (10, 100_000)])
def test_errors_always_and_successes_sampled_under_a_runtime_key(percent: int, numerator: int) -> None:
    errors, flagged, sampled = _filters(dataclasses.replace(LISTENER, access_log_percent=percent))
    comparison = errors.status_code_filter.comparison
    assert (comparison.op, comparison.value.default_value) == (accesslog_pb2.ComparisonFilter.GE, 400)
    assert flagged.HasField("response_flag_filter") and not flagged.response_flag_filter.flags
    share = sampled.runtime_filter
    assert share.runtime_key == access_logs.SUCCESS_SHARE_KEY and share.use_independent_randomness
    assert (share.percent_sampled.numerator, share.percent_sampled.denominator) == (
        numerator,
        percent_pb2.FractionalPercent.MILLION,
    )


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


@pytest.mark.parametrize("raw", ["0", "-5", "many"])
def test_a_bad_budget_is_one_line(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv(access_logs.BUDGET_ENV, raw)
    access_logs.configured_budget.cache_clear()
    try:
        with pytest.raises(SystemExit, match=r"GATEHOUSE_ACCESS_LOG_BUDGET=.* is not a whole number"):
            access_logs.configured_budget()
    finally:
        access_logs.configured_budget.cache_clear()
