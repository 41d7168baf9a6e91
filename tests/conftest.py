"""Options and rules shared by every test."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Generator, Iterator

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


@pytest.fixture(scope="session", autouse=True)
def _no_replica_network_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests that stop servers the hard way (killing Envoys and replicas by pid, as a crash would)
    leave their replicas' namespaces: remove those of this session's homes (other sessions on the
    machine keep theirs)."""
    yield
    subnet = os.environ.get("GATEHOUSE_LOCAL_REPLICA_SUBNET", "10.213.0.0/16")
    for state in tmp_path_factory.getbasetemp().glob("**/replicas/*/*/network.json"):
        try:
            namespace = json.loads(state.read_text())["namespace"]
        except (OSError, ValueError, KeyError):
            continue
        link = "gh" + namespace.removeprefix("gh-")
        for undo in (
            ["netns", "delete", namespace],
            ["link", "delete", link],
            ["rule", "delete", "iif", link, "to", subnet, "prohibit"],
        ):
            subprocess.run(["ip", *undo], capture_output=True, check=False)
