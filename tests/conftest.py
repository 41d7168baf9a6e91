"""Options and rules shared by every test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path

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


def _replica_namespaces() -> set[str]:
    """Network namespaces of local replicas (`gh-…`) on this machine."""
    if not Path("/run/netns").is_dir():
        return set()
    return {path.name for path in Path("/run/netns").iterdir() if path.name.startswith("gh-")}


@pytest.fixture(scope="session", autouse=True)
def _no_replica_network_left() -> Iterator[None]:
    """Tests that stop servers the hard way (killing Envoys and replicas by pid, as a crash would)
    leave their replicas' namespaces: remove those this session made."""
    before = _replica_namespaces()
    yield
    for name in _replica_namespaces() - before:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        link = "gh" + name.removeprefix("gh-")
        subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
        rule = ["iif", link, "to", os.environ.get("GATEHOUSE_LOCAL_REPLICA_SUBNET", "10.213.0.0/16")]
        subprocess.run(["ip", "rule", "delete", *rule, "prohibit"], capture_output=True, check=False)
