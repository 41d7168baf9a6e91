"""Reads a `*.dstack.yml` configuration file, with errors that point at the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from cli.config import UsageError

SUFFIX = ".dstack.yml"


def load_configuration(path_text: str) -> tuple[dict[str, Any], str]:
    """The configuration as data, and its source (the absolute path) that finds it again."""
    path = Path(path_text)
    if not path.name.endswith(SUFFIX):
        raise UsageError(
            f"{path_text}: the file name must end with {SUFFIX} (for example gateway{SUFFIX} or {SUFFIX})"
        )
    data = read_yaml_mapping(path_text, what="a configuration (`type: gateway` or `type: service`)")
    if data.get("type") not in ("gateway", "service"):
        raise UsageError(f"{path_text}: `type` must be gateway or service, not {data.get('type')!r}")
    return data, str(path.resolve())


def read_yaml_mapping(path_text: str, what: str = "a mapping") -> dict[str, Any]:
    """A YAML file holding one mapping, with errors that point at the file and line."""
    path = Path(path_text)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path_text}: no such file") from None
    except OSError as error:
        raise UsageError(f"{path_text}: cannot read it: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{path_text}:{mark.line + 1}" if mark is not None else path_text
        raise UsageError(f"{where}: invalid YAML: {error.problem}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"{path_text}: invalid YAML: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path_text}: expected {what}")
    try:
        # Values YAML reads as dates or times travel as the text written.
        return json.loads(json.dumps(data, default=str))  # type: ignore[no-any-return]
    except (TypeError, ValueError) as error:
        raise UsageError(f"{path_text}: {error}") from None
