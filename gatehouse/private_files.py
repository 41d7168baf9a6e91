"""Files only the user who runs Gatehouse may read: its home, keys, tokens, the database and logs.

The server runs with umask PRIVATE_UMASK, so what it creates is private; `tighten` takes back the
permissions a user (or an older Gatehouse) gave others on a file that was already there.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

PRIVATE_UMASK = 0o077
_OTHERS = 0o077


@dataclass(frozen=True)
class Loosened:
    """A path that group or others could read, write or enter, and whether it was tightened."""

    path: Path
    mode: int
    tightened: bool

    @property
    def private_mode(self) -> int:
        return self.mode & ~_OTHERS

    def warning(self) -> str:
        if self.tightened:
            return (
                f"{self.path} was open to other users (mode {self.mode:04o}): made it {self.private_mode:04o}"
            )
        return f"{self.path} is open to other users (mode {self.mode:04o}): chmod it {self.private_mode:04o}"


def loosened(path: Path) -> Loosened | None:
    """What group and others may do with `path`, if anything (None also when missing or a symlink)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode) or not mode & _OTHERS:
        return None
    return Loosened(path, stat.S_IMODE(mode), tightened=False)


def tighten(path: Path) -> Loosened | None:
    """Takes group's and others' permissions off `path`; says what they were, None if there were none."""
    found = loosened(path)
    if found is None:
        return None
    try:
        os.chmod(path, found.private_mode, follow_symlinks=False)
    except PermissionError:
        return found
    return Loosened(path, found.mode, tightened=True)


def make_private_directory(path: Path) -> None:
    """`path` and any missing parent, made readable by their owner only."""
    if not path.exists():
        make_private_directory(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)


def write_private(path: Path, content: bytes) -> None:
    """Writes `path` readable by its owner only, whatever the umask."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)


# sun_path holds 108 bytes with its terminating NUL.
MAX_SOCKET_PATH = 107


def socket_path(path: Path) -> str:
    """`path` for a Unix socket, or where it would pass the length a socket path may have, a name
    derived from it in a private directory of this user's."""
    text = str(path)
    if len(text.encode()) <= MAX_SOCKET_PATH:
        return text
    short = Path(tempfile.gettempdir()) / f"gatehouse-{os.geteuid()}"
    short.mkdir(mode=0o700, exist_ok=True)
    return str(short / (hashlib.sha256(text.encode()).hexdigest()[:20] + ".sock"))
