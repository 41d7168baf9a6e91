"""Answers to reads, kept until a write changes what they show: a write (this copy's, or another
copy's once heard of) bumps the generation of every project it touched (all of them when it cannot
say), and a read stores its answer only if its project's generation did not move while it read.
With several copies, answers are used and stored only while this copy has heard of every write
taken so far (`fresh`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from google.protobuf.message import Message

from services.registry.feed import PROJECTS_TOUCHED

M = TypeVar("M", bound=Message)
MAX_ENTRIES = 20_000
Key = tuple[Any, ...]


async def _always_fresh() -> bool:
    return True


class ReadCache:
    def __init__(self, fresh: Callable[[], Awaitable[bool]] = _always_fresh) -> None:
        self.fresh = fresh
        self._epoch = 0
        self._projects: dict[str, int] = {}
        self._entries: dict[Key, Message] = {}

    def _generation(self, project: str) -> tuple[int, int]:
        return self._epoch, self._projects.get(project, 0)

    def invalidate(self, projects: Iterable[str | None] | None = None) -> None:
        """Forgets the answers about `projects`; everything when None or when one is None."""
        wanted = None if projects is None else set(projects)
        if wanted is None or None in wanted:
            self._epoch += 1
            self._entries.clear()
            return
        for project in wanted:
            if project is not None:
                self._projects[project] = self._projects.get(project, 0) + 1
        self._entries = {key: value for key, value in self._entries.items() if key[1] not in wanted}

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def after_write(self, info: dict[str, Any]) -> None:
        self.invalidate(info.get(PROJECTS_TOUCHED))

    async def get(self, key: Key, load: Callable[[], Awaitable[M]]) -> M:
        """`key` is (kind, project, ...)."""
        fresh = await self.fresh()
        found = self._entries.get(key) if fresh else None
        if found is not None:
            return found  # type: ignore[return-value]
        generation = self._generation(key[1])
        value = await load()
        if fresh and generation == self._generation(key[1]):
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = value
        return value
