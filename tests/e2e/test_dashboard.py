"""The web dashboard in Debian's headless Chromium against a real server: it asks for a token, a
wrong one is refused, a good one logs in; a service's chart moves under load; another project's
member sees only their own service of the same name; `gatehouse dashboard` hands over the token in
the URL's fragment."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from services.common.probes import free_port
from tests.support.chromium import Chromium
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real

ROW = "document.querySelector('tr[data-service=\"{key}\"]')"


def _apply(
    server: ServerProcess, path: Path, text: str, *args: str, env: dict[str, str] | None = None
) -> None:
    path.write_text(text)
    done = server.cli("apply", "-f", str(path), "-y", *args, env=env)
    assert done.code == 0, done.stderr + server.log()[-3000:]


def _service(port: int) -> str:
    return (
        f'type: service\nname: dash-svc\ngateway: dash-gw\nport: "{port}:{free_port()}"\nauth: false\n'
        'commands: ["python -m http.server $PORT"]\n'
    )


async def test_the_dashboard_logs_in_and_a_services_chart_moves(
    server: ServerProcess, tmp_path: Path
) -> None:
    gateway = "type: gateway\nname: dash-gw\nbackend: local\nregion: local\n"
    _apply(server, tmp_path / "gw.dstack.yml", gateway)
    port = free_port()
    _apply(server, tmp_path / "svc.dstack.yml", _service(port))
    frank = {"GATEHOUSE_TOKEN": server.cli("user", "create", "frank-dash").stdout.split()[-1]}
    assert server.cli("project", "create", "frank-dash", env=frank).code == 0
    _apply(server, tmp_path / "fgw.dstack.yml", gateway, "--project", "frank-dash", env=frank)
    _apply(server, tmp_path / "fsvc.dstack.yml", _service(free_port()), "--project", "frank-dash", env=frank)
    host = gateway_host(server, "dash-gw")
    page = f"http://127.0.0.1:{server.metrics_port}/"

    async with Chromium(tmp_path / "profile") as browser:
        await browser.navigate(page)
        assert await browser.wait_for("!document.getElementById('login').hidden")
        # A wrong token is refused, and the page says so.
        await browser.evaluate(
            "document.getElementById('token').value = 'gh_wrong';"
            "document.getElementById('login').requestSubmit(); true"
        )
        assert await browser.wait_for("document.getElementById('login-error').textContent") == (
            "That token is not valid."
        )
        await browser.evaluate(
            f"document.getElementById('token').value = {json.dumps(server.token)};"
            "document.getElementById('login').requestSubmit(); true"
        )
        main_row = ROW.format(key="main/dash-svc")
        assert await browser.wait_for(f"!!{main_row}")
        assert await browser.wait_for(
            ROW.format(key="frank-dash/dash-svc") + " !== null"
        )  # the admin sees both
        assert await browser.evaluate(f"{main_row}.dataset.rps") == "0.000"

        stop = threading.Event()

        def load() -> None:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                fetch(f"http://{host}:{port}/")

        loader = threading.Thread(target=load)
        loader.start()
        try:
            moved = f"parseFloat({main_row}.dataset.rps) > 0 && {main_row}.dataset.points >= 2"
            rps = await browser.wait_for(f"{moved} && {main_row}.dataset.rps", 30)
        finally:
            stop.set()
            await asyncio.to_thread(loader.join)
        assert rps and float(rps) > 0
        assert int(await browser.evaluate(f"{main_row}.dataset.points")) >= 2
        assert " ms" in await browser.evaluate(f"{main_row}.cells[7].textContent")  # p50
        assert "running" in await browser.evaluate(f"{main_row}.textContent")
        gateways = await browser.evaluate("document.getElementById('gateways').textContent")
        assert "dash-gw" in gateways and "accepted" in gateways
        await browser.screenshot(tmp_path / "dashboard.png")
        assert (tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # Frank, logged in by `gatehouse dashboard`'s address, sees his service and nothing of main.
        url = server.cli("dashboard", "--no-open", env=frank).stdout.strip()
        assert url.startswith(page + "#token=gh_")
        await browser.evaluate("sessionStorage.clear(); true")
        await browser.navigate("about:blank")
        await browser.navigate(url)
        assert await browser.wait_for(ROW.format(key="frank-dash/dash-svc") + " !== null")
        assert await browser.evaluate(f"{main_row} === null")
        assert "main" not in await browser.evaluate("document.getElementById('main').textContent")
        # The token left the address bar once read.
        assert "#token" not in await browser.evaluate("location.href")


@pytest.mark.parametrize("path", ["/api/dashboard"])
def test_the_dashboards_data_needs_a_token(server: ServerProcess, path: str) -> None:
    status, body = fetch(f"http://127.0.0.1:{server.metrics_port}{path}")
    assert status == 401 and "dash" not in body
    status, body = fetch(f"http://127.0.0.1:{server.metrics_port}/")
    assert status == 200 and "<title>Gatehouse</title>" in body
