"""`/metrics` of a real `gatehouse server`: after requests to a service its counters and latency
rise, the gateway's 401s are counted, process series are there, and the endpoint needs a token
and shows a project's member only that project's series (two projects, two gateways, two services)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gatehouse import metrics
from gateway_xds.observe.stats_reporter import REPORT_SECONDS_ENV
from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.server import ServerProcess, running_server

pytestmark = pytest.mark.real

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: ServerProcess, token: str | None) -> tuple[int, Samples]:
    status, body = fetch(f"http://127.0.0.1:{server.metrics_port}/metrics", token=token)
    samples: Samples = {}
    if status == 200:
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return status, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples carrying `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def until(check: Callable[[], bool], within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return check()


def apply(
    server: ServerProcess, path: Path, text: str, *args: str, env: dict[str, str] | None = None
) -> None:
    path.write_text(text)
    done = server.cli("apply", "-f", str(path), "-y", *args, env=env)
    assert done.code == 0, done.stdout + done.stderr + server.log()[-3000:]


def service_file(name: str, gateway: str, port: int, marker: str, auth: bool) -> str:
    return f"""type: service
name: {name}
gateway: {gateway}
port: "{port}:{free_port()}"
auth: {str(auth).lower()}
commands: ["echo {marker} > index.html && python -m http.server $PORT"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """With service stats reported every second (10 s by default)."""
    with running_server(tmp_path_factory.mktemp("gatehouse-home"), {REPORT_SECONDS_ENV: "1"}) as process:
        yield process


@pytest.fixture(scope="module")
def carol(server: ServerProcess) -> dict[str, str]:
    token = server.cli("user", "create", "carol-obs").stdout.split()[-1]
    env = {"GATEHOUSE_TOKEN": token}
    assert server.cli("project", "create", "carol-obs", env=env).code == 0
    return env


def test_requests_raise_a_services_series_and_members_see_only_their_project(
    server: ServerProcess, carol: dict[str, str], tmp_path: Path
) -> None:
    apply(server, tmp_path / "gw.dstack.yml", "type: gateway\nname: obs-gw\nbackend: local\nregion: local\n")
    open_port, auth_port, carol_port = free_port(), free_port(), free_port()
    apply(
        server, tmp_path / "a.dstack.yml", service_file("obs-open", "obs-gw", open_port, "marker-open", False)
    )
    apply(
        server, tmp_path / "b.dstack.yml", service_file("obs-auth", "obs-gw", auth_port, "marker-auth", True)
    )
    apply(
        server,
        tmp_path / "cgw.dstack.yml",
        "type: gateway\nname: obs-gw\nbackend: local\nregion: local\n",
        "--project",
        "carol-obs",
        env=carol,
    )
    carol_service = service_file("obs-open", "obs-gw", carol_port, "marker-carol", False)
    apply(server, tmp_path / "c.dstack.yml", carol_service, "--project", "carol-obs", env=carol)
    host = gateway_host(server, "obs-gw")
    carol_host = gateway_host(server, "obs-gw", project="carol-obs")

    for _ in range(50):
        status, body = fetch(f"http://{host}:{open_port}/")
        assert (status, body.strip()) == (200, "marker-open")
    for _ in range(3):
        assert fetch(f"http://{host}:{auth_port}/")[0] == 401
    status, body = fetch(f"http://{carol_host}:{carol_port}/")
    assert (status, body.strip()) == (200, "marker-carol")

    mine = {"project": "main", "gateway": "obs-gw", "service": "obs-open"}
    requests_total = f"{metrics.SERVICE_REQUESTS}_total"
    latency_count = f"{metrics.SERVICE_UPSTREAM_LATENCY}_count"

    def risen() -> bool:
        _, samples = scrape(server, server.token)
        return (
            value(samples, requests_total, code_class="2xx", **mine) >= 50
            and value(samples, latency_count, **mine) >= 50
        )

    assert until(risen), scrape(server, server.token)
    _, samples = scrape(server, server.token)
    assert value(samples, requests_total, code_class="5xx", **mine) == 0
    # The gateway answers the 401s itself (its credential check), so they never reach the service's
    # cluster: they are counted from the access log entries Envoy streams.
    unauthorized = f"{metrics.SERVICE_UNAUTHORIZED}_total"

    def refusals_counted() -> bool:
        return value(scrape(server, server.token)[1], unauthorized, service="obs-auth") == 3

    assert until(refusals_counted), scrape(server, server.token)
    _, samples = scrape(server, server.token)
    assert value(samples, unauthorized, **mine) == 0
    assert value(samples, requests_total, service="obs-auth", project="main", code_class="4xx") == 0
    assert value(samples, requests_total, service="obs-auth", project="main", code_class="2xx") == 0
    assert value(samples, metrics.SERVICE_REPLICAS, **mine) == 1
    # Latency in seconds, within the buckets kept.
    buckets = {
        dict(labels)["le"] for (name, labels), _ in samples.items() if name.endswith("latency_seconds_bucket")
    }
    assert "0.001" in buckets and "+Inf" in buckets and len(buckets) == len(metrics.LATENCY_BUCKETS_MS) + 1
    # Process series: gRPC calls by method and code, reconciles, xDS per gateway, the revision.
    assert value(samples, f"{metrics.GRPC_REQUESTS}_total", code="OK") > 0
    assert value(samples, f"{metrics.RECONCILES}_total", reconciler="gateways", result="ok") > 0
    assert value(samples, metrics.XDS_CONNECTED_ENVOYS, project="main", gateway="obs-gw") == 1
    assert value(samples, f"{metrics.XDS_PUSHES}_total", project="main", gateway="obs-gw") > 0
    assert value(samples, f"{metrics.XDS_PUSH_ACK_SECONDS}_count", project="main", gateway="obs-gw") > 0
    assert value(samples, metrics.REGISTRY_REVISION) > 0
    # The admin sees both projects' services of the same name apart.
    carols = {"project": "carol-obs", "gateway": "obs-gw", "service": "obs-open"}
    assert until(
        lambda: value(scrape(server, server.token)[1], requests_total, code_class="2xx", **carols) == 1
    )

    # Carol, a member of her project only, sees her series and nothing of project main.
    status, seen = scrape(server, carol["GATEHOUSE_TOKEN"])
    assert status == 200
    assert value(seen, requests_total, code_class="2xx", **carols) == 1
    assert {dict(labels).get("project") for _, labels in seen} == {"carol-obs"}
    assert not any(name.startswith("gatehouse_grpc") or name.startswith("process_") for name, _ in seen)


def test_service_stats_show_the_traffic_of_the_last_minutes(
    server: ServerProcess, carol: dict[str, str]
) -> None:
    host = gateway_host(server, "obs-gw")
    url = json.loads(server.cli("service", "get", "obs-open", "--json").stdout)["status"]["urls"][0]
    port = int(url.rstrip("/").rsplit(":", 1)[1])

    def counted() -> bool:
        for _ in range(20):
            assert fetch(f"http://{host}:{port}/")[0] == 200
        done = server.cli("service", "stats", "obs-open", "--json")
        points = json.loads(done.stdout).get("points", [])
        return any(p.get("rps", 0) > 0 and p.get("p50_ms", 0) > 0 for p in points)

    assert until(counted, within=30)
    shown = server.cli("service", "stats", "obs-open")
    assert shown.code == 0 and shown.stdout.startswith("now: ")
    assert "requests/s" in shown.stdout and "p99 ms" in shown.stdout and "replicas" in shown.stdout
    assert any(bar in shown.stdout for bar in "▂▃▄▅▆▇█")
    # Carol's service of the same name is hers; project main's she cannot read.
    refused = server.cli("service", "stats", "obs-open", "--project", "main", env=carol)
    assert refused.code == 1 and "not a member" in refused.stderr
    bad = server.cli("service", "stats", "obs-open", "--minutes", "99")
    assert bad.code == 1 and "--minutes must be 1 to 15" in bad.stderr


@pytest.mark.parametrize("token", [None, "", "gh_not-a-token", "Basic YWRtaW46YWRtaW4="])
def test_metrics_need_a_valid_token(server: ServerProcess, token: str | None) -> None:
    status, body = fetch(f"http://127.0.0.1:{server.metrics_port}/metrics", token=token)
    assert status == 401, body
    assert "gatehouse_" not in body


def test_metrics_listen_on_loopback_only_by_default(server: ServerProcess) -> None:
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        # 127.0.0.2 is loopback too, but not the address bound.
        assert probe.connect_ex(("127.0.0.2", server.metrics_port)) != 0


@pytest.mark.parametrize("role", ["server", "registry"])
def test_a_metrics_port_in_use_is_one_line_before_anything_starts(tmp_path: Path, role: str) -> None:
    import socket
    import subprocess

    from tests.support.server import GATEHOUSE

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        home = tmp_path / "home"
        env = {
            **ServerProcess(home=home).env,
            metrics.PORT_ENV: str(port),
        }
        done = subprocess.run(
            [GATEHOUSE, role, "--port", "0"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use "
        f"(set {metrics.PORT_ENV} or --metrics-port; 0 picks a free port)"
    )
    assert not (home / "server" / "data").exists()
