"""Defaults every client and server agrees on."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_API_ADDRESS = "127.0.0.1:50051"
DEFAULT_XDS_PORT = 50052


def gatehouse_home() -> Path:
    return Path(os.environ.get("GATEHOUSE_HOME") or Path.home() / ".gatehouse").expanduser()
