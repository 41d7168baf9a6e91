"""A real `gatehouse server` (its own home, ports and local Envoys) for each e2e module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.provisioner.backends.base import BackendError
from services.provisioner.backends.local.gateway import envoy_binary
from tests.support.real import require_real
from tests.support.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    try:
        envoy_binary()
    except BackendError as error:
        require_real(str(error))
    process = ServerProcess(home=tmp_path_factory.mktemp("gatehouse-home"))
    process.start()
    yield process
    process.stop()
    process.kill_data_plane()
