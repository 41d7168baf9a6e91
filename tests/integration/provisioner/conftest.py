"""Fixtures for the provisioner's cloud backends: a moto_server for aws, shared per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.provisioner.aws_emulator import MotoServer, start_moto


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    yield from start_moto(tmp_path_factory.mktemp("moto"))
