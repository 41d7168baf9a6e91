"""`gatehouse dashboard`: the web dashboard's address, logged in with the CLI's token (carried in
the URL's fragment, which the browser never sends to the server), opened in a browser."""

from __future__ import annotations

import json
import webbrowser
from urllib.parse import quote

from cli.config import CliError
from gatehouse import metrics
from gatehouse.client.defaults import gatehouse_home


def dashboard_url(base: str | None, token: str) -> str:
    if not base:
        state = gatehouse_home() / "server" / "server.json"
        try:
            port = int(json.loads(state.read_text())["metrics_port"])
        except (OSError, ValueError, KeyError, TypeError):
            raise CliError(
                f"no local server's dashboard found ({state}): pass --url http://HOST:PORT/ "
                f"(the server's metrics port, {metrics.DEFAULT_PORT} by default)"
            ) from None
        base = f"http://127.0.0.1:{port}/"
    if not base.startswith(("http://", "https://")):
        raise CliError(f"--url {base!r}: give an http:// or https:// address")
    return base.split("#", 1)[0].rstrip("/") + "/#token=" + quote(token, safe="")


def open_dashboard(base: str | None, token: str, open_browser: bool) -> int:
    url = dashboard_url(base, token)
    print(url)
    if open_browser:
        webbrowser.open(url)
    return 0
