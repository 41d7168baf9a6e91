"""Processes that outlive the server: started in their own session, found again by pid file.

A pid file records the pid and the process start time, so a reused pid is never mistaken for ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

STOP_GRACE_SECONDS = 10.0


def _start_time(pid: int) -> str | None:
    """The process start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


class ManagedProcess:
    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.pid_file = directory / f"{name}.pid"
        self.log_file = directory / f"{name}.log"
        self._child: subprocess.Popen[bytes] | None = None

    def pid(self) -> int | None:
        if self._child is not None:
            self._child.poll()  # reaps our own child once it exits
        try:
            pid_text, started = self.pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        return pid if _start_time(pid) == started else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self._child = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = _start_time(self._child.pid) or "0"
        self.pid_file.write_text(f"{self._child.pid} {started}\n")
        return self._child.pid

    async def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            self._signal(pid, signal.SIGTERM)
            deadline = asyncio.get_running_loop().time() + STOP_GRACE_SECONDS
            while self.pid() is not None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            if self.pid() is not None:
                self._signal(pid, signal.SIGKILL)
                while self.pid() is not None:
                    await asyncio.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signum)

    def tail(self, lines: int) -> list[str]:
        try:
            with open(self.log_file, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 256 * lines))
                data = handle.read().decode(errors="replace")
        except OSError:
            return []
        return data.splitlines()[-lines:]
