"""Autoscaling from Envoy's own stats: a bounded request loop on loopback takes a service from 1 to
3 replicas, and it goes back to 1 once the load stops (delays shortened in the configuration)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real


def _service(server: ServerProcess) -> dict[str, object]:
    return json.loads(server.cli("service", "get", "scaler", "--json").stdout)  # type: ignore[no-any-return]


def _until(check: object, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.5)
    return False


def test_load_scales_a_service_up_and_its_absence_back_down(server: ServerProcess, tmp_path: Path) -> None:
    gateway = tmp_path / "gw.dstack.yml"
    gateway.write_text("type: gateway\nname: scale-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(gateway), "-y").code == 0
    gateway_port, app_port = free_port(), free_port()
    service = tmp_path / "scaler.dstack.yml"
    service.write_text(
        f"""type: service
name: scaler
gateway: scale-gw
port: "{gateway_port}:{app_port}"
auth: false
replicas: 1..3
scaling: {{metric: rps, target: 2, window: 30s, scale_up_delay: 1, scale_down_delay: 2}}
commands: ["python -m http.server $PORT"]
"""
    )
    assert server.cli("apply", "-f", str(service), "-y").code == 0
    assert _service(server)["status"].get("desired_replicas") == 1
    host = gateway_host(server, "scale-gw")

    stop = threading.Event()
    answers: list[int] = []

    def load() -> None:
        deadline = time.monotonic() + 90  # bounded even if the test fails
        while not stop.is_set() and time.monotonic() < deadline:
            answers.append(fetch(f"http://{host}:{gateway_port}/")[0])
            time.sleep(0.03)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        scaled_up = _until(
            lambda: _service(server)["status"].get("ready_replicas") == 3,
            within=60,
        )
    finally:
        stop.set()
        loader.join()
    assert scaled_up, server.cli("service", "get", "scaler", "--json").stdout + server.log()[-2000:]
    assert answers.count(200) == len(answers), {code: answers.count(code) for code in set(answers)}
    assert len(server.cli("replica", "list", "scaler").stdout.strip().splitlines()) == 4  # header + 3
    # Quiet now: once the 30 s window has no traffic left and the delay passed, back to one.
    assert _until(lambda: _service(server)["status"].get("desired_replicas") == 1, within=60)
    assert _until(lambda: _service(server)["status"].get("ready_replicas") == 1, within=30)
    assert fetch(f"http://{host}:{gateway_port}/")[0] == 200
    assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0


def test_first_requests_to_a_service_scaled_to_zero_wait_for_its_replica(
    server: ServerProcess, tmp_path: Path
) -> None:
    gateway = tmp_path / "gw.dstack.yml"
    gateway.write_text("type: gateway\nname: zero-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(gateway), "-y").code == 0
    gateway_port, app_port = free_port(), free_port()
    service = tmp_path / "sleepy.dstack.yml"
    service.write_text(
        f"""type: service
name: sleepy
gateway: zero-gw
port: "{gateway_port}:{app_port}"
replicas: 0..2
scaling: {{metric: rps, target: 50, window: 30s}}
commands: ["python -m http.server $PORT"]
"""
    )
    assert server.cli("apply", "-f", str(service), "-y").code == 0
    sleepy = json.loads(server.cli("service", "get", "sleepy", "--json").stdout)
    assert sleepy["status"].get("desired_replicas", 0) == 0
    assert server.cli("replica", "list", "sleepy").stdout.strip().count("\n") == 0  # the header only

    url = f"http://{gateway_host(server, 'zero-gw')}:{gateway_port}/"
    # Auth comes first: a request without a credential neither waits nor wakes the service.
    assert fetch(url)[0] == 401
    assert (
        json.loads(server.cli("service", "get", "sleepy", "--json").stdout)["status"].get(
            "desired_replicas", 0
        )
        == 0
    )

    answers: list[int] = []

    def first_request() -> None:
        answers.append(fetch(url, timeout=60, token=server.token)[0])

    waiting = [threading.Thread(target=first_request) for _ in range(4)]
    for thread in waiting:
        thread.start()
    for thread in waiting:
        thread.join()
    assert answers == [200] * 4, (answers, server.log()[-2000:])
    assert len(server.cli("replica", "list", "sleepy").stdout.strip().splitlines()) == 2  # header + 1
    assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0
