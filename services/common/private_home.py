"""`$GATEHOUSE_HOME` is the server user's alone: the server writes with umask 077 (directories 0700,
files 0600) and, on start, takes back what a user opened up in what it owns there.

What it owns: the home itself, the CLI config, the log `make run` writes, and the server's,
gateways' and replicas' directories, except the working directory of each local replica, which holds
the replica's own files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from gatehouse.private_files import PRIVATE_UMASK, make_private_directory, tighten

log = logging.getLogger(__name__)

OWNED_FILES = ("config.yml", "server.log")
OWNED_TREES = ("server", "gateways", "replicas")
REPLICA_WORKDIRS = "replicas/*/*/work"


def owned_paths(home: Path) -> Iterator[Path]:
    yield home
    for name in OWNED_FILES:
        yield home / name
    for name in OWNED_TREES:
        top = home / name
        if not top.is_dir():
            continue
        for directory, subdirectories, files in os.walk(top):
            here = Path(directory)
            subdirectories[:] = [
                sub for sub in subdirectories if not (here / sub).relative_to(home).match(REPLICA_WORKDIRS)
            ]
            yield here
            yield from (here / file for file in files)


def tighten_and_warn(paths: Iterable[Path]) -> None:
    """One warning line for each path a user opened to others, which is made private again."""
    for path in paths:
        found = tighten(path)
        if found is not None:
            log.warning(found.warning())


def make_home_private(home: Path) -> None:
    """Before the server writes anything: its umask, its home, and what it owns there made private."""
    os.umask(PRIVATE_UMASK)
    make_private_directory(home)
    tighten_and_warn(owned_paths(home))
