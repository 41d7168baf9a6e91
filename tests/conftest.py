"""Options and rules shared by every test."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False, help="rewrite golden files")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """With GATEHOUSE_REQUIRE_REAL=1 (CI), a skipped test that needs a real component fails."""
    report = yield
    if report.skipped and item.get_closest_marker("real") and os.environ.get("GATEHOUSE_REQUIRE_REAL") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped, but real components are required in CI: {report.longrepr}"
    return report
