"""Plain HTTP requests to loopback, bypassing any proxy settings."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(
    url: str,
    timeout: float = 5.0,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    host: str | None = None,
) -> tuple[int, str]:
    """Status and body; 0 and the error when nothing answered. `token`: sent as a bearer credential;
    `host`: the Host header, when it is not the URL's."""
    sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    if host is not None:
        sent["Host"] = host
    request = urllib.request.Request(url, headers=sent)
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error)


def wait_for_status(url: str, status: int, within: float = 20.0, token: str | None = None) -> tuple[int, str]:
    """Polls until `url` answers `status`; returns the last answer either way."""
    deadline = time.monotonic() + within
    last = fetch(url, token=token)
    while last[0] != status and time.monotonic() < deadline:
        time.sleep(0.05)
        last = fetch(url, token=token)
    return last
