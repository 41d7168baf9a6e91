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
# A log past this size is moved aside (one generation kept) when its process starts again.
LOG_ROTATE_BYTES = 8 << 20


def _live_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if the process
    is gone or a zombie."""
    try:
        stat = Path("/proc", str(pid), "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else fields


def _start_time(pid: int) -> str | None:
    """The process start time in clock ticks since boot."""
    fields = _live_stat(pid)
    return fields[19] if fields is not None else None


def _group_alive(group: int) -> bool:
    """Whether a live process is in process group `group` (a process's children stay in its group:
    a shell's commands, a server's workers)."""
    with os.scandir("/proc") as entries:
        pids = [entry.name for entry in entries if entry.name.isdigit()]
    return any((fields := _live_stat(pid)) is not None and fields[2] == str(group) for pid in pids)


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

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, umask: int | None = None) -> int:
        """`umask` for the process (else the server's own, which keeps the server's files private)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._rotate_log()
        descriptor = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(descriptor, "ab") as log:
            self._child = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                umask=-1 if umask is None else umask,
            )
        started = _start_time(self._child.pid) or "0"
        self.pid_file.write_text(f"{self._child.pid} {started}\n")
        return self._child.pid

    def exit_code(self) -> int | None:
        """How the process this server started last ended (None: running, or not ours to know)."""
        if self._child is None:
            return None
        return self._child.poll()

    def _rotate_log(self) -> None:
        try:
            if self.log_file.stat().st_size > LOG_ROTATE_BYTES:
                self.log_file.replace(self.log_file.with_suffix(".log.1"))
        except OSError:
            pass

    async def stop(self) -> None:
        """SIGTERM to the process and everything it started, SIGKILL after a grace period; returns
        once none of them is left (so whatever they listened on is free)."""
        group = self.pid()
        if group is not None:
            self._signal(group, signal.SIGTERM)
            if not await self._group_gone(group, STOP_GRACE_SECONDS):
                self._signal(group, signal.SIGKILL)
                await self._group_gone(group, None)
        self.pid_file.unlink(missing_ok=True)

    async def _group_gone(self, group: int, within: float | None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while True:
            alive = _group_alive(group)
            if self._child is not None:
                self._child.poll()  # reaps our own child (a zombie counts as gone above)
            if not alive:
                return True
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)

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
