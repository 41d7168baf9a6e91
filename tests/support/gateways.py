"""What the CLI says of a gateway, for tests that reach it."""

from __future__ import annotations

import json

from tests.support.server import ServerProcess


def gateway_host(server: ServerProcess, name: str, project: str | None = None) -> str:
    """The gateway's address (its own loopback address on the local backend)."""
    args = (["--project", project] if project else []) + ["gateway", "get", name, "--json"]
    shown = server.cli(*args)
    assert shown.code == 0, shown.stderr
    return str(json.loads(shown.stdout)["status"]["hostname"])
