"""Defaults every client and server agrees on."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_API_ADDRESS = "127.0.0.1:50051"
DEFAULT_XDS_PORT = 50052
# Initial metadata a long call (`gateway create`) sends once it has accepted the request: the CLI
# says "it may take some time" only then, never before a validation error.
ACCEPTED_METADATA = ("gatehouse-accepted", "1")


def gatehouse_home() -> Path:
    return Path(os.environ.get("GATEHOUSE_HOME") or Path.home() / ".gatehouse").expanduser()
