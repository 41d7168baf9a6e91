"""The Grafana dashboard and the Prometheus scrape example in examples/observability read only what
Gatehouse exports: every query names at least one metric, and every metric it names is exported."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatehouse import metrics

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "observability"


def _queries() -> list[str]:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def _named_metrics(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "{}", expr)
    without_groupings = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    names = re.findall(r"[a-zA-Z_:][\w:]*", without_groupings)
    return {name for name in names if name.startswith(("gatehouse_", "process_", "python_"))}


def test_the_dashboard_has_queries() -> None:
    assert len(_queries()) >= 10


@pytest.mark.parametrize("expr", _queries())
def test_every_query_names_only_exported_metrics(expr: str) -> None:
    named = _named_metrics(expr)
    assert named, f"no Gatehouse metric in {expr!r}"
    assert named <= metrics.sample_names(), named - metrics.sample_names()


def test_a_misspelt_metric_would_be_caught() -> None:
    assert _named_metrics("rate(gatehouse_service_request_total[1m])") - metrics.sample_names()


def test_the_scrape_example_sends_a_token_to_the_default_port() -> None:
    config: dict[str, Any] = yaml.safe_load((EXAMPLES / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    assert job["static_configs"][0]["targets"] == [f"{metrics.DEFAULT_HOST}:{metrics.DEFAULT_PORT}"]
