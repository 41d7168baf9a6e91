"""Keys, tokens, the database and logs are their owner's alone, whatever the umask, and what a user
opened up is taken back with a warning naming the path."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cli.config import CliConfig
from gatehouse.private_files import Loosened, make_private_directory, tighten
from services.common.db import Database
from services.common.private_home import owned_paths, tighten_and_warn


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask most users have, under which files are made readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_tighten_takes_group_and_other_permissions_away(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret")
    token.chmod(0o644)
    assert tighten(token) == Loosened(token, 0o644, tightened=True)
    assert mode(token) == 0o600
    assert tighten(token) is None
    assert tighten(tmp_path / "missing") is None
    link = tmp_path / "link"
    link.symlink_to(token)
    token.chmod(0o640)
    assert tighten(link) is None  # a link's target is not tightened through it
    assert mode(token) == 0o640


def test_private_directories_are_made_0700_with_their_parents(tmp_path: Path, open_umask: None) -> None:
    home = tmp_path / "a" / "home"
    make_private_directory(home)
    assert mode(home) == mode(home.parent) == 0o700


def test_the_sweep_covers_what_gatehouse_owns_in_its_home_and_no_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    owned = [
        home / "config.yml",
        home / "server" / "data" / "gatehouse.sqlite",
        home / "gateways" / "gw-1" / "envoy.log",
        home / "replicas" / "svc-1" / "0" / "replica.log",
    ]
    theirs = [home / "replicas" / "svc-1" / "0" / "work" / "index.html", home / "notes.txt"]
    for path in owned + theirs:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_text("x")
        path.chmod(0o644)
    home.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        tighten_and_warn(owned_paths(home))
    assert all(mode(path) == 0o600 for path in owned)
    assert mode(home) == mode(home / "replicas" / "svc-1" / "0") == 0o700
    assert all(mode(path) == 0o644 for path in theirs)
    assert mode(home / "replicas" / "svc-1" / "0" / "work") == 0o755
    assert f"{home / 'config.yml'} was open to other users (mode 0644): made it 0600" in caplog.messages


async def test_a_new_sqlite_database_and_its_wal_are_private_whatever_the_umask(
    tmp_path: Path, open_umask: None
) -> None:
    path = tmp_path / "data" / "gatehouse.sqlite"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await db.migrate()
        async with db.read() as session:  # keeps a connection, and so the WAL, open
            await session.execute(text("SELECT 1"))
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            assert {file: mode(file) for file in files} == dict.fromkeys(files, 0o600)
    finally:
        await db.close()
    assert mode(path.parent) == 0o700


def test_a_database_a_user_opened_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gatehouse.sqlite"
    path.write_bytes(b"")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        Database(f"sqlite+aiosqlite:///{path}")
    assert mode(path) == 0o600
    assert caplog.messages == [f"{path} was open to other users (mode 0644): made it 0600"]


def test_the_cli_warns_when_others_can_read_its_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yml"
    config.write_text("token: t\n")
    monkeypatch.setenv("GATEHOUSE_CONFIG", str(config))
    monkeypatch.delenv("GATEHOUSE_TOKEN", raising=False)
    config.chmod(0o600)
    assert CliConfig.load().token == "t"
    assert capsys.readouterr().err == ""
    config.chmod(0o644)
    assert CliConfig.load().token == "t"
    assert capsys.readouterr().err == f"warning: {config} is open to other users (mode 0644): chmod it 0600\n"
