"""Autoscaling from Envoy's own stats: a bounded request loop on loopback takes a service from 1 to
3 replicas, and it goes back to 1 once the load stops (delays shortened in the configuration)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real


def _service(server: ServerProcess, name: str = "scaler") -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(server.cli("service", "get", name, "--json").stdout)
    return shown


def _until(check: Callable[[], object], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
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


# Takes half a second per request, so that requests in flight pile up under a few clients.
SLOW_APP = r"""
import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        time.sleep(0.5)
        body = f"replica {os.environ['GATEHOUSE_REPLICA']}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def test_requests_in_flight_scale_a_service_up_and_back_down_without_a_failed_request(
    server: ServerProcess, tmp_path: Path
) -> None:
    gateway = tmp_path / "gw.dstack.yml"
    gateway.write_text("type: gateway\nname: busy-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(gateway), "-y").code == 0
    gateway_port = free_port()
    app = tmp_path / "slow.py"
    app.write_text(SLOW_APP)
    service = tmp_path / "busy.dstack.yml"
    service.write_text(
        f"""type: service
name: busy
gateway: busy-gw
port: "{gateway_port}:8000"
auth: false
replicas: 1..3
scaling: {{metric: concurrency, target: 2, window: 30s, scale_up_delay: 1, scale_down_delay: 2}}
commands: ["python {app}"]
"""
    )
    assert server.cli("apply", "-f", str(service), "-y").code == 0
    url = f"http://{gateway_host(server, 'busy-gw')}:{gateway_port}/"
    answers: list[tuple[int, str]] = []
    quiet, done = threading.Event(), threading.Event()

    def client(stop: threading.Event) -> None:
        deadline = time.monotonic() + 150  # bounded even if the test fails
        while not stop.is_set() and not done.is_set() and time.monotonic() < deadline:
            answers.append(fetch(url, timeout=10))

    busy = [threading.Thread(target=client, args=(quiet,)) for _ in range(5)]
    last = threading.Thread(target=client, args=(done,))
    for thread in [*busy, last]:
        thread.start()  # six requests in flight, three times the target: three replicas
    try:
        up = _until(lambda: _status(server, "busy").get("ready_replicas") == 3, within=60)
        # The third replica takes requests once every Envoy routes to it.
        _until(lambda: "replica 2" in {body for _, body in answers[-12:]}, within=10)
        before = len(answers)
        # Five clients go quiet; the one left keeps a request in flight while replicas are stopped.
        quiet.set()
        down = _until(lambda: _status(server, "busy").get("ready_replicas") == 1, within=90)
    finally:
        quiet.set()
        done.set()
        for thread in [*busy, last]:
            thread.join()
    assert up, _status(server, "busy")
    assert down, _status(server, "busy")
    assert {body for _, body in answers[:before]} == {"replica 0", "replica 1", "replica 2"}
    failed = [answer for answer in answers if answer[0] != 200]
    assert failed == [] and len(answers) > before, (len(failed), failed[:3])
    assert server.cli("delete", "-f", str(gateway), "-y", "--force").code == 0


def _status(server: ServerProcess, name: str) -> dict[str, Any]:
    status: dict[str, Any] = _service(server, name)["status"]
    return status
