"""The skeleton scenario with registry, provisioner, certificates and xDS as four processes on
PostgreSQL: the way docker-compose runs them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from services.common.probes import free_port
from tests.support.databases import database_url
from tests.support.http import fetch
from tests.support.server import GATEHOUSE

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
async def split(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("split-home")
    async with database_url("postgresql", home) as url:
        registry_port, xds_port = free_port(), free_port()
        env = dict(os.environ)
        env.update(
            GATEHOUSE_HOME=str(home),
            GATEHOUSE_DB_URL=url,
            GATEHOUSE_REGISTRY=f"127.0.0.1:{registry_port}",
            GATEHOUSE_XDS_PORT=str(xds_port),
            GATEHOUSE_LOCAL_HTTP_PORT=str(free_port()),
            GATEHOUSE_LOCAL_HTTPS_PORT=str(free_port()),
            GATEHOUSE_LOCAL_ENVOY_CONCURRENCY="1",
            GATEHOUSE_SYSTEM_TOKEN="gh_split-test-system-token",
            GATEHOUSE_SERVER=f"127.0.0.1:{registry_port}",
            GATEHOUSE_APPLY_TIMEOUT="60",
        )
        commands = [
            ["registry", "--port", str(registry_port)],
            ["xds"],
            ["provisioner", "--port", str(free_port())],
            ["certificates", "--port", str(free_port())],
        ]
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for args in commands:
                with open(home / f"{args[0]}.log", "wb") as log:  # noqa: ASYNC230
                    processes.append(
                        subprocess.Popen([GATEHOUSE, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
                    )
                if args[0] == "registry":
                    deadline = time.monotonic() + 30
                    while not (home / "config.yml").exists() and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
            env["_HOME"] = str(home)
            yield env
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(timeout=30)
            for pid_file in home.glob("**/*.pid"):
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GATEHOUSE, *args], env=env, capture_output=True, text=True, timeout=120)


def test_skeleton_scenario_across_four_processes(split: dict[str, str], tmp_path: Path) -> None:
    home = Path(split["_HOME"])
    gateway = tmp_path / "gateway.dstack.yml"
    gateway.write_text("type: gateway\nname: split-gw\nbackend: local\nregion: local\n")
    result = _cli(split, "apply", "-f", str(gateway), "-y")
    logs = "".join(p.read_text() for p in home.glob("*.log"))
    assert result.returncode == 0, result.stderr + logs
    gateway_port, app_port = free_port(), free_port()
    service = tmp_path / "service.dstack.yml"
    service.write_text(
        textwrap.dedent(
            f"""
            type: service
            gateway: 127.0.0.1
            port: "{gateway_port}:{app_port}"
            commands:
              - python -m http.server {app_port}
            """
        )
    )
    result = _cli(split, "apply", "-f", str(service), "-y")
    assert result.returncode == 0, result.stderr
    token = yaml.safe_load((home / "config.yml").read_text())["token"]
    assert fetch(f"http://127.0.0.1:{gateway_port}/", token=token)[0] == 200
    assert fetch(f"http://127.0.0.1:{gateway_port}/")[0] == 401  # auth: true is the default
    assert _cli(split, "delete", "-f", str(service), "-y").returncode == 0
    assert _cli(split, "delete", "-f", str(gateway), "-y").returncode == 0
