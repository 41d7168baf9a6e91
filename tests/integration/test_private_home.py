"""`gatehouse server` keeps `$GATEHOUSE_HOME` its user's alone: what it writes is private, and on
start it takes back, with a warning naming the path, what a user opened to others."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.support.server import ServerProcess


def modes(home: Path) -> dict[str, int]:
    paths = [home, *home.rglob("*")]
    return {str(path.relative_to(home)): stat.S_IMODE(path.lstat().st_mode) for path in paths}


def test_the_server_home_and_everything_it_writes_there_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)  # as `mkdir -p` leaves it under the usual umask
    server = ServerProcess(home=home)
    server.start()
    try:
        assert server.cli("whoami").code == 0
        found = modes(home)
        for name in (
            "config.yml",
            "server/system-token",
            "server/encryption.key",
            "server/data/gatehouse.sqlite",
            "server/data/gatehouse.sqlite-wal",
            "server/data/gatehouse.sqlite-shm",
            "server/server.json",
            "server.log",
        ):
            assert found.pop(name) == 0o600, name
        for name in (".", "server", "server/data"):
            assert found.pop(name) == 0o700, name
        assert {name: mode for name, mode in found.items() if mode & 0o077} == {}
    finally:
        server.stop()
    assert f"{home} was open to other users (mode 0755): made it 0700" in server.log()

    for path in (home / "config.yml", home / "server" / "data" / "gatehouse.sqlite"):
        path.chmod(0o644)
    (home / "server").chmod(0o751)
    server.start()
    try:
        assert server.cli("whoami").code == 0
        found = modes(home)
        assert (found["config.yml"], found["server/data/gatehouse.sqlite"], found["server"]) == (
            0o600,
            0o600,
            0o700,
        )
    finally:
        server.stop()
    log = server.log()
    assert f"{home / 'config.yml'} was open to other users (mode 0644): made it 0600" in log
    assert f"{home / 'server'} was open to other users (mode 0751): made it 0700" in log
    sqlite = home / "server" / "data" / "gatehouse.sqlite"
    assert f"{sqlite} was open to other users (mode 0644): made it 0600" in log
