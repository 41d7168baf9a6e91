"""Rollouts under load through a real gateway Envoy: requests failed while a good new version rolls,
while a broken one is rolled back, and at a canary's promote and abort; the share a 10% canary gets.

    .venv/bin/python -m bench.rollouts [--canary-requests 2000]

Starts its own `gatehouse server` (local backend), applies the services with the CLI and drives them
with a bounded request loop on loopback. Prints the machine's core count and one line per case."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from services.common.probes import free_port
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.rollouts import Load, rollout_of, service_file, until
from tests.support.server import ServerProcess, running_server

BROKEN: dict[str, dict[str, Any]] = {
    "command exits": {"command": "exit 3"},
    "probe never passes": {"probe": "{type: http, url: /health, interval: 1s, expected_status: 299}"},
}


def _versions(load: Load) -> str:
    counted = Counter(body.split()[0] for status, body in load.answers if status == 200)
    return ", ".join(f"{version} {count}" for version, count in sorted(counted.items()))


def _line(case: str, load: Load, seconds: float, outcome: str) -> None:
    print(
        f"{case:<28} {len(load.answers):>6} requests {len(load.failed()):>3} failed   "
        f"by version: {_versions(load):<16} {seconds:5.1f}s  {outcome}"
    )


def _apply(server: ServerProcess, path: Path) -> tuple[int, str, float]:
    started = time.monotonic()
    done = server.cli("apply", "-f", str(path), "-y")
    return done.code, (done.stderr.strip() or "ok"), time.monotonic() - started


def run(home: Path, work: Path, canary_requests: int) -> None:
    env = {"GATEHOUSE_REPLICA_READY_TIMEOUT": "12", "GATEHOUSE_REPLICA_DRAIN": "1"}
    with running_server(home, extra_env=env) as server:
        gateway = work / "gw.dstack.yml"
        gateway.write_text("type: gateway\nname: roll-gw\nbackend: local\nregion: local\n")
        if server.cli("apply", "-f", str(gateway), "-y").code != 0:
            raise SystemExit("error: the gateway did not start")
        host = gateway_host(server, "roll-gw")
        print(f"cores: {os.cpu_count()}")

        def fresh(name: str, **spec: Any) -> tuple[Path, str, int]:
            directory = work / name
            directory.mkdir()
            port = free_port()
            first = service_file(directory, name, port, "v1", **spec)
            if _apply(server, first)[0] != 0:
                raise SystemExit(f"error: {name} v1 did not start")
            return directory, f"http://{host}:{port}/", port

        directory, url, port = fresh("rolling", replicas=2)
        with Load(url) as load:
            code, said, seconds = _apply(server, service_file(directory, "rolling", port, "v2", replicas=2))
            time.sleep(1)
        _line("good v2, 2 replicas", load, seconds, f"apply exit {code}")

        for case, broken in BROKEN.items():
            name = "broken-" + case.split()[0]
            directory, url, port = fresh(name)
            with Load(url) as load:
                code, said, seconds = _apply(server, service_file(directory, name, port, "v2", **broken))
                time.sleep(1)
            _line(f"v2 whose {case}", load, seconds, f"apply exit {code}: {said}")

        canary = "canary: {weight: 10, header: X-Canary}\n"
        directory, url, port = fresh("canaried", extra=canary)
        _apply(server, service_file(directory, "canaried", port, "v2", extra=canary))
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: fetch(url), range(canary_requests)))
        share = Counter(body.split()[0] for _, body in answers)["v2"]
        failed = sum(status != 200 for status, _ in answers)
        percent = 100 * share / canary_requests
        counts = f"{canary_requests:>6} requests {failed:>3} failed"
        print(f"{'10% canary':<28} {counts}   v2 got {share} ({percent:.1f}%)")
        for verb, state, then in (("promote", "complete", "v3"), ("abort", "failed", "")):
            with Load(url) as load:
                started = time.monotonic()
                server.cli("service", verb, "canaried")
                until(lambda: rollout_of(server, "canaried").get("state") == state)  # noqa: B023
                seconds = time.monotonic() - started
                time.sleep(1)
            _line(f"canary {verb}", load, seconds, str(rollout_of(server, "canaried").get("message", "")))
            if then:
                _apply(server, service_file(directory, "canaried", port, then, extra=canary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canary-requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatehouse-rollouts-") as scratch:
        root = Path(scratch)
        (root / "home").mkdir()
        (root / "work").mkdir()
        run(root / "home", root / "work", args.canary_requests)


if __name__ == "__main__":
    main()
