"""Debian's `prometheus` scrapes a real `gatehouse server` with the example scrape configuration
(examples/observability/prometheus.yml): up with the token, down with a wrong one."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.probes import free_port
from tests.support.http import fetch
from tests.support.real import require_real
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "observability" / "prometheus.yml"


def _query(port: int, expression: str) -> list[dict[str, Any]]:
    status, body = fetch(f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expression)}")
    return json.loads(body)["data"]["result"] if status == 200 else []


def test_prometheus_scrapes_with_the_example_configuration(server: ServerProcess, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        require_real("no prometheus on PATH (apt-get install -y prometheus)")
    good, bad = tmp_path / "good.token", tmp_path / "bad.token"
    good.write_text(server.token)
    bad.write_text("gh_not-a-token")
    for path in (good, bad):
        path.chmod(0o600)
    config = yaml.safe_load(EXAMPLE.read_text())
    config["global"]["scrape_interval"] = "1s"
    job = config["scrape_configs"][0]
    job["authorization"]["credentials_file"] = str(good)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.metrics_port}"]}]
    wrong = json.loads(json.dumps(job))
    wrong["job_name"] = "wrong-token"
    wrong["authorization"]["credentials_file"] = str(bad)
    config["scrape_configs"] = [job, wrong]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        up: dict[str, str] = {}
        while time.monotonic() < deadline and set(up) != {"gatehouse", "wrong-token"}:
            up = {r["metric"]["job"]: r["value"][1] for r in _query(port, "up")}
            time.sleep(0.5)
        assert up == {"gatehouse": "1", "wrong-token": "0"}
        revision = _query(port, "gatehouse_registry_revision")
        assert revision and float(revision[0]["value"][1]) > 0
        assert _query(port, 'gatehouse_registry_revision{job="wrong-token"}') == []
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
