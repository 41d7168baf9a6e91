"""What one node has of one type, stored as differences from the current snapshot.

A gateway with 10,000 services has 30,000 resources; a stream that kept a name -> version map of
what its node has would hold 30,000 entries, times every Envoy. Instead a stream keeps the current
snapshot (shared by every stream of the gateway) as its baseline and only the names where its node
differs from it. A node in step with its gateway costs no per-name memory at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Set

from gateway_xds.cache.resource import Resource

_NO_RESOURCES: Mapping[str, Resource] = {}
_NO_NAMES: Mapping[str, object] = {}


class NodeVersions:
    """name -> version the node has (None: it has nothing by that name)."""

    __slots__ = ("_base", "_overrides")

    def __init__(self) -> None:
        self._base: Mapping[str, Resource] = _NO_RESOURCES
        self._overrides: dict[str, str | None] = {}

    def get(self, name: str) -> str | None:
        if name in self._overrides:
            return self._overrides[name]
        resource = self._base.get(name)
        return resource.version if resource is not None else None

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    def set(self, name: str, version: str) -> None:
        resource = self._base.get(name)
        if resource is not None and resource.version == version:
            self._forget(name)
        else:
            self._overrides[name] = version

    def drop(self, name: str) -> None:
        if name in self._base:
            self._overrides[name] = None
        else:
            self._forget(name)

    def _forget(self, name: str) -> None:
        self._overrides.pop(name, None)
        if not self._overrides:
            # A dict does not shrink as it empties: start afresh rather than keep its table.
            self._overrides = {}

    def names(self) -> Iterator[str]:
        """Every name the node has (O(resources): for whole comparisons only)."""
        for name in self._base:
            if self._overrides.get(name, "") is not None:
                yield name
        for name, version in self._overrides.items():
            if version is not None and name not in self._base:
                yield name

    def rebase(self, base: Mapping[str, Resource], maybe_different: Iterable[str] | None) -> None:
        """Keep the same content against a new baseline. `maybe_different`: the names whose resource
        may differ between the old baseline and the new one (None: any name)."""
        if not maybe_different and maybe_different is not None and not self._overrides:
            self._base = base  # nothing differs from the baseline, before or after
            return
        names = _rebased_names(self._base, base, self._overrides, maybe_different)
        current = {name: self.get(name) for name in names}
        self._base = base
        self._overrides = {}
        for name, version in current.items():
            if version is None:
                self.drop(name)
            else:
                self.set(name, version)

    @property
    def differences(self) -> int:
        return len(self._overrides)


class NodeNames:
    """The names a node subscribes to by name, against a baseline name set."""

    __slots__ = ("_base", "_overrides")

    def __init__(self) -> None:
        self._base: Mapping[str, object] = _NO_NAMES
        self._overrides: dict[str, bool] = {}

    def __contains__(self, name: object) -> bool:
        if name in self._overrides:
            return self._overrides[name]
        return name in self._base

    def add(self, name: str) -> None:
        self._put(name, True)

    def discard(self, name: str) -> None:
        self._put(name, False)

    def _put(self, name: str, present: bool) -> None:
        if (name in self._base) == present:
            self._overrides.pop(name, None)
            if not self._overrides:
                self._overrides = {}
        else:
            self._overrides[name] = present

    def rebase(self, base: Mapping[str, object], maybe_different: Iterable[str] | None) -> None:
        if not maybe_different and maybe_different is not None and not self._overrides:
            self._base = base  # nothing differs from the baseline, before or after
            return
        names = _rebased_names(self._base, base, self._overrides, maybe_different)
        current = {name: name in self for name in names}
        self._base = base
        self._overrides = {}
        for name, present in current.items():
            self._put(name, present)

    @property
    def differences(self) -> int:
        return len(self._overrides)


def _rebased_names(
    old: Mapping[str, object],
    new: Mapping[str, object],
    overrides: Mapping[str, object],
    maybe_different: Iterable[str] | None,
) -> Set[str]:
    """The names whose state must be carried over to a new baseline."""
    if maybe_different is None:
        return set(old) | set(new) | set(overrides)
    if not overrides:
        # Concrete types: an isinstance check against the abstract Set costs more than the rest.
        return maybe_different if isinstance(maybe_different, (set, frozenset)) else set(maybe_different)
    return set(maybe_different) | set(overrides)
