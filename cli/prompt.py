"""Yes/no questions, answered on stdin or skipped with -y.

The answer is read off the event loop (a daemon thread reading standard input a byte at a time), so
Ctrl-C at the question cancels the command at once instead of waiting for Enter, and nothing is
read beyond the answer's line: the next question, or the command's own input, finds the rest."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading

from cli.config import UsageError

YES = ("y", "yes")
NO = ("n", "no")


def _read_line(loop: asyncio.AbstractEventLoop, answer: asyncio.Future[str | None]) -> None:
    line = b""
    try:
        while not line.endswith(b"\n"):
            byte = os.read(sys.stdin.fileno(), 1)
            if not byte:
                break
            line += byte
    except (OSError, ValueError):
        pass
    text = line.decode(errors="replace") if line else None

    def answered() -> None:
        if not answer.done():
            answer.set_result(text)

    # RuntimeError: the command ended (Ctrl-C) while we waited.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(answered)


async def read_answer() -> str | None:
    """One line of standard input, or None at its end."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str | None] = loop.create_future()
    threading.Thread(target=_read_line, args=(loop, answer), daemon=True).start()
    return await answer


async def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    while True:
        print(f"{question} [y/n]: ", end="", flush=True)
        try:
            answer = await read_answer()
        except asyncio.CancelledError:
            print(flush=True)  # the shell's prompt starts on a line of its own
            raise
        if answer is None:
            print(flush=True)
            raise UsageError("no answer on standard input: pass -y to answer yes")
        reply = answer.strip().lower()
        if reply in YES or reply in NO:
            return reply in YES
        # Anything else is asked again (dstack does the same).
