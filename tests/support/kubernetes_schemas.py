"""Validates Kubernetes objects against the vendored schemas (tests/fixtures/kubernetes)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).parent.parent / "fixtures" / "kubernetes" / "kubernetes-v1.37.0-strict.json"


@cache
def _bundle() -> dict[str, Any]:
    bundle: dict[str, Any] = json.loads(SCHEMAS.read_text())
    return bundle


def kinds() -> set[str]:
    return set(_bundle()["kinds"])


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Every way `document` breaks its kind's schema ("path: message"), or why it has no schema."""
    key = f"{document.get('apiVersion')}/{document.get('kind')}"
    bundle = _bundle()
    if key not in bundle["kinds"]:
        return [f"no schema for {key}"]
    schema = {**bundle["kinds"][key], "$defs": bundle["$defs"]}
    validator = Draft202012Validator(schema)
    return sorted(
        f"{'/'.join(str(part) for part in error.absolute_path) or '.'}: {error.message}"
        for error in validator.iter_errors(document)
    )
