"""Where the CLI finds the server, its token and the default project."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from cli.output import warning
from gatehouse.client.defaults import DEFAULT_API_ADDRESS, gatehouse_home
from gatehouse.private_files import loosened


class UsageError(Exception):
    """Bad input from the user: one line, exit code 2."""


class CliError(Exception):
    """A failure to report: one line, exit code 1."""


def _warn_if_open(path: Path) -> None:
    """The config holds a token: like ssh with a key, say so when others can read it."""
    found = loosened(path)
    if found is not None:
        warning(found.warning())


@dataclass(frozen=True)
class CliConfig:
    server: str
    token: str
    project: str

    @classmethod
    def load(cls, server: str | None = None, project: str | None = None) -> CliConfig:
        path = Path(os.environ.get("GATEHOUSE_CONFIG") or gatehouse_home() / "config.yml")
        stored: dict[str, str] = {}
        if path.exists():
            _warn_if_open(path)
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as error:
                raise CliError(f"the CLI config {path} is not valid YAML: {error}") from None
            stored = loaded if isinstance(loaded, dict) else {}
        token = os.environ.get("GATEHOUSE_TOKEN") or stored.get("token")
        if not token:
            raise CliError(f"no token: start `gatehouse server` (it writes {path}) or set GATEHOUSE_TOKEN")
        return cls(
            server=server
            or os.environ.get("GATEHOUSE_SERVER")
            or stored.get("server")
            or DEFAULT_API_ADDRESS,
            token=token,
            project=project or os.environ.get("GATEHOUSE_PROJECT") or stored.get("project") or "main",
        )
