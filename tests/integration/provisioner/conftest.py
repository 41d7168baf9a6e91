"""Fixtures for the provisioner's cloud backends: a moto_server for aws, shared per session, behind a
proxy as strict as AWS (`tests/fakes/aws_strict.py`). A test that leaves a host AWS accepted but that
could not reach the control plane (the proxy's findings) fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.aws_strict import StrictAws
from tests.integration.provisioner.aws_emulator import MotoServer, start_moto


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    for moto in start_moto(tmp_path_factory.mktemp("moto")):
        with StrictAws(moto.url).serve() as strict:
            yield MotoServer(strict.url, moto.process, strict)


@pytest.fixture(autouse=True)
def no_unreachable_aws_hosts(request: pytest.FixtureRequest) -> Iterator[None]:
    if "moto_server" not in request.fixturenames:
        yield
        return
    strict = request.getfixturevalue("moto_server").strict
    assert strict is not None
    strict.findings.clear()
    yield
    if strict.findings:
        pytest.fail("AWS would have accepted hosts that cannot work: " + "; ".join(strict.findings))
