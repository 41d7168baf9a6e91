"""Which of Envoy's stats the bootstrap keeps: all but the per-service cluster stats nobody reads.

Envoy matches with RE2; these patterns use only syntax RE2 and Python's `re` share, and an
integration test (`test_a_services_cluster_keeps_only_the_stats_that_are_read`) runs them in Envoy.
"""

import re

import pytest

from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gateway_xds.autoscale.metrics_sink import DEMAND_STATS


def kept(name: str) -> bool:
    bootstrap = render_bootstrap(BootstrapParams("gw", 0, "127.0.0.1", 50052))
    patterns = bootstrap["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"]
    return any(re.fullmatch(p["safe_regex"]["regex"], name) for p in patterns)


@pytest.mark.parametrize("stat", DEMAND_STATS)
def test_the_autoscalers_demand_stats_are_kept(stat: str) -> None:
    assert kept(f"cluster.svc_main_web.{stat}")


@pytest.mark.parametrize(
    "name",
    [
        "cluster.svc_main_web.upstream_rq_5xx",
        "cluster.svc_main_web.membership_healthy",
        "cluster.svc_main_web.outlier_detection.ejections_active",
        "cluster.gatehouse_xds.upstream_cx_total",
        "cluster.svc",
        "cluster_manager.active_clusters",
        "control_plane.connected_state",
        "http.ingress_http.downstream_rq_total",
        "listener_manager.listener_modified",
        "server.memory_allocated",
    ],
)
def test_everything_else_an_operator_reads_is_kept(name: str) -> None:
    assert kept(name)


@pytest.mark.parametrize(
    "name",
    [
        "cluster.svc_main_web.upstream_cx_total",
        "cluster.svc_main_web.upstream_rq_completed",
        "cluster.svc_main_web.circuit_breakers.default.rq_open",
        "cluster.svc_main_web.outlier_detection.ejections_total",
        "cluster.svc_main_web.upstream_rq_total_extra",
    ],
)
def test_the_rest_of_a_service_clusters_stats_are_not_made(name: str) -> None:
    assert not kept(name)
