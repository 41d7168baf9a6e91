"""Real components are required in CI: a missing one fails there instead of skipping."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def require_real(reason: str) -> NoReturn:
    """Skip locally; fail when GATEHOUSE_REQUIRE_REAL=1 (CI sets it), so CI never skips silently."""
    if os.environ.get("GATEHOUSE_REQUIRE_REAL") == "1":
        pytest.fail(f"{reason} (GATEHOUSE_REQUIRE_REAL=1: real components are required)")
    pytest.skip(reason)
