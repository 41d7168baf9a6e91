"""Yes/no questions, answered on stdin or skipped with -y."""

from __future__ import annotations

import sys

from cli.config import UsageError


def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    print(f"{question} [y/n]: ", end="", flush=True)
    answer = sys.stdin.readline()
    if not answer:
        raise UsageError("no answer on standard input: pass -y to answer yes")
    return answer.strip().lower() in ("y", "yes")
