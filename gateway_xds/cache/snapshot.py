"""An immutable, versioned set of xDS resources for one gateway.

A snapshot is built whole (`Snapshot(revision, resources)`, O(resources)) or derived from the
previous one (`evolve`, O(changed resources)): the derived snapshot shares nothing mutable with its
parent, checks its consistency incrementally and remembers which names changed, so that the ADS
streams serving it do O(changes) work per update rather than O(gateway).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from google.protobuf.message import Message

from gateway_xds.cache.resource import Resource, make_resource
from gateway_xds.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SECRET,
    WILDCARD_TYPES,
    short_name,
)

# How many derivations back a snapshot can still name its changes; older ones need a full compare.
CHANGE_LOG_LENGTH: Final = 64

Updates = Mapping[str, Mapping[str, Resource | None]]
Changes = dict[str, frozenset[str]]

_EMPTY: Mapping[str, Resource] = MappingProxyType({})
_REFERENCE_WORDS = {
    ROUTE: "route configuration",
    CLUSTER: "cluster",
    ENDPOINT: "endpoint assignment",
    SECRET: "secret",
}


class Snapshot:
    """Resources by type URL and name. Treat every part as read-only.

    `revision` identifies the configuration the snapshot was built from (reported back on ACK);
    `version(type_url)` summarises the type's content and each Resource carries its own content
    version, so unchanged resources and types are never re-sent.
    """

    __slots__ = (
        "_entries",
        "_errors",
        "_lineage",
        "_log",
        "_refcounts",
        "_serial",
        "_since",
        "_tokens",
        "revision",
    )

    revision: int
    _entries: dict[str, dict[str, Resource]]
    _refcounts: dict[str, dict[str, int]]
    _tokens: dict[str, int]
    _lineage: object
    _serial: int
    _log: tuple[tuple[int, Changes], ...]
    _errors: tuple[str, ...]
    # The last answer of changed_since: (the older serial, its changes); every stream of the gateway
    # asks the same.
    _since: tuple[int, Changes] | None

    def __init__(self, revision: int, resources: Mapping[str, Mapping[str, Message | Resource]]) -> None:
        entries: dict[str, dict[str, Resource]] = {t: {} for t in PUSH_ORDER}
        for type_url, by_name in resources.items():
            entries[type_url] = {name: _wrap(type_url, name, item) for name, item in by_name.items()}
        refcounts: dict[str, dict[str, int]] = {t: {} for t in entries}
        for by_name in entries.values():
            for resource in by_name.values():
                _count(refcounts, resource, +1)
        tokens = {t: _xor(r.token for r in by_name.values()) for t, by_name in entries.items()}
        self._init(revision, entries, refcounts, tokens, object(), 0, (), tuple(_dangling(entries)))

    def _init(
        self,
        revision: int,
        entries: dict[str, dict[str, Resource]],
        refcounts: dict[str, dict[str, int]],
        tokens: dict[str, int],
        lineage: object,
        serial: int,
        log: tuple[tuple[int, Changes], ...],
        errors: tuple[str, ...],
    ) -> None:
        self.revision = revision
        self._entries = entries
        self._refcounts = refcounts
        self._tokens = tokens
        self._lineage = lineage
        self._serial = serial
        self._log = log
        self._errors = errors
        self._since = None

    def __repr__(self) -> str:
        sizes = ", ".join(f"{short_name(t)}={len(e)}" for t, e in self._entries.items() if e)
        return f"Snapshot(revision={self.revision}, serial={self._serial}, {sizes or 'empty'})"

    @classmethod
    def empty(cls, revision: int = 0) -> Snapshot:
        return cls(revision=revision, resources={})

    @property
    def is_empty(self) -> bool:
        return not any(self._entries.values())

    @property
    def serial(self) -> int:
        """How many derivations separate this snapshot from the whole build it descends from."""
        return self._serial

    # -- reading -----------------------------------------------------------------------------------

    def version(self, type_url: str) -> str:
        """The type's version: the same set of (name, content) pairs always gives the same version."""
        return format(self._tokens.get(type_url, 0), "032x")

    def token(self, type_url: str) -> int:
        """The type's version as a number (the XOR of its resources' tokens)."""
        return self._tokens.get(type_url, 0)

    def get(self, type_url: str, name: str) -> Resource | None:
        return self._entries.get(type_url, _EMPTY).get(name)

    def entries(self, type_url: str) -> Mapping[str, Resource]:
        """Read-only view of the type's resources by name."""
        return MappingProxyType(self._entries.get(type_url, _EMPTY))

    def resources_of(self, type_url: str, names: Iterable[str] | None = None) -> dict[str, Message]:
        """The messages of a type, restricted to `names` (those that exist) unless names is None."""
        entries = self._entries.get(type_url, _EMPTY)
        chosen = sorted(entries) if names is None else sorted(n for n in set(names) if n in entries)
        return {name: entries[name].message for name in chosen}

    def is_required(self, type_url: str, name: str) -> bool:
        """Whether an Envoy needs this resource: every resource of a wildcard type, otherwise those
        another resource of the snapshot refers to."""
        if type_url in WILDCARD_TYPES:
            return name in self._entries.get(type_url, _EMPTY)
        return self._refcounts.get(type_url, {}).get(name, 0) > 0

    def referenced(self, type_url: str) -> Mapping[str, int]:
        """Read-only view of the names of `type_url` other resources refer to, with how many do."""
        return MappingProxyType(self._refcounts.get(type_url, {}))

    def required_names(self, type_url: str) -> frozenset[str]:
        """The names of `type_url` an Envoy needs to apply this snapshot completely."""
        if type_url in WILDCARD_TYPES:
            return frozenset(self._entries.get(type_url, _EMPTY))
        return frozenset(self._refcounts.get(type_url, {}))

    def consistent(self) -> list[str]:
        """Dangling references between types, as error strings; empty when consistent."""
        return list(self._errors)

    def total_size(self) -> int:
        """Bytes of every packed resource."""
        return sum(r.size for entries in self._entries.values() for r in entries.values())

    # -- deriving ----------------------------------------------------------------------------------

    def with_revision(self, revision: int) -> Snapshot:
        """The same resources, built from a later registry revision."""
        return self.evolve(revision, {})

    def evolve(self, revision: int, updates: Updates) -> Snapshot:
        """A snapshot with `updates` applied (a Resource sets a name, None removes it).

        Consistency is checked for what changed only, so the parent must be consistent. Resources
        whose version is unchanged keep their parent's object and are not counted as changed.
        """
        entries = dict(self._entries)
        refcounts = dict(self._refcounts)
        tokens = dict(self._tokens)
        copied_refcounts: set[str] = set()
        changed: dict[str, set[str]] = {}
        touched_references: dict[str, set[str]] = {}
        added: list[Resource] = []
        for type_url, by_name in updates.items():
            current = self._entries.get(type_url, _EMPTY)
            mine: dict[str, Resource] | None = None
            for name, resource in by_name.items():
                old = current.get(name)
                if resource is not None and resource.name != name:
                    raise ValueError(f"resource {resource.name!r} given under the name {name!r}")
                if old is resource or (
                    old is not None and resource is not None and old.version == resource.version
                ):
                    continue
                if old is None and resource is None:
                    continue
                if mine is None:
                    mine = entries[type_url] = dict(current)
                for reference in (old, resource):
                    if reference is None:
                        continue
                    for target in reference.references:
                        if target not in copied_refcounts:
                            refcounts[target] = dict(refcounts.get(target, {}))
                            copied_refcounts.add(target)
                if old is not None:
                    _note_references(touched_references, old)
                    _count(refcounts, old, -1)
                    tokens[type_url] = tokens.get(type_url, 0) ^ old.token
                if resource is None:
                    del mine[name]
                else:
                    mine[name] = resource
                    _count(refcounts, resource, +1)
                    _note_references(touched_references, resource)
                    tokens[type_url] = tokens.get(type_url, 0) ^ resource.token
                    added.append(resource)
                changed.setdefault(type_url, set()).add(name)
        errors = _dangling_after(entries, refcounts, changed, added)
        # A name whose referrers changed may have become (un)required: streams look at it again.
        for target, names in touched_references.items():
            changed.setdefault(target, set()).update(names)
        frozen_changes = {t: frozenset(names) for t, names in changed.items()}
        log = (*self._log[-(CHANGE_LOG_LENGTH - 1) :], (self._serial + 1, frozen_changes))
        derived = Snapshot.__new__(Snapshot)
        derived._init(
            revision, entries, refcounts, tokens, self._lineage, self._serial + 1, log, tuple(errors)
        )
        return derived

    def changed_since(self, older: Snapshot) -> Changes | None:
        """Names per type that may differ between `older` and this snapshot; None when unknown
        (different lineage or too far back), in which case compare the snapshots whole. Callers
        share the answer: do not modify it."""
        if older is self:
            return {}
        if older._lineage is not self._lineage or older._serial > self._serial:
            return None
        if self._serial - older._serial > len(self._log):
            return None
        since = self._since
        if since is not None and since[0] == older._serial:
            return since[1]
        merged: dict[str, set[str]] = {}
        for serial, changes in self._log:
            if serial > older._serial:
                for type_url, names in changes.items():
                    merged.setdefault(type_url, set()).update(names)
        changes = {t: frozenset(names) for t, names in merged.items()}
        self._since = (older._serial, changes)
        return changes


def diff_names(older: Snapshot | None, newer: Snapshot, type_url: str) -> set[str]:
    """Names of `type_url` whose resource differs between two snapshots, compared whole."""
    new_entries = newer.entries(type_url)
    if older is None:
        return set(new_entries)
    old_entries = older.entries(type_url)
    different = {
        n for n, r in new_entries.items() if (o := old_entries.get(n)) is None or o.version != r.version
    }
    different.update(n for n in old_entries if n not in new_entries)
    return different


def _note_references(into: dict[str, set[str]], resource: Resource) -> None:
    for target, names in resource.references.items():
        into.setdefault(target, set()).update(names)


def _wrap(type_url: str, name: str, item: Message | Resource) -> Resource:
    if isinstance(item, Resource):
        if item.type_url != type_url or item.name != name:
            raise ValueError(f"resource {item.type_url} {item.name!r} given as {type_url} {name!r}")
        return item
    return make_resource(type_url, name, item)


def _xor(tokens: Iterable[int]) -> int:
    value = 0
    for token in tokens:
        value ^= token
    return value


def _count(refcounts: dict[str, dict[str, int]], resource: Resource, delta: int) -> None:
    for target, names in resource.references.items():
        counts = refcounts.setdefault(target, {})
        for name in names:
            count = counts.get(name, 0) + delta
            if count:
                counts[name] = count
            else:
                counts.pop(name, None)


def _describe(resource: Resource, target: str, name: str) -> str:
    if resource.type_url == CLUSTER and target == ENDPOINT:
        return f"EDS cluster {resource.name!r} has no endpoint assignment {name!r}"
    what = "listener" if resource.type_url == LISTENER else _REFERENCE_WORDS.get(resource.type_url)
    what = what or short_name(resource.type_url)
    missing = _REFERENCE_WORDS.get(target, short_name(target))
    return f"{what} {resource.name!r} refers to missing {missing} {name!r}"


def _dangling(entries: Mapping[str, Mapping[str, Resource]]) -> list[str]:
    errors: list[str] = []
    for type_url in (LISTENER, *(t for t in entries if t != LISTENER)):
        for name in sorted(entries.get(type_url, _EMPTY)):
            resource = entries[type_url][name]
            for target, names in sorted(resource.references.items()):
                existing = entries.get(target, _EMPTY)
                errors += [_describe(resource, target, n) for n in sorted(names) if n not in existing]
    return errors


def _dangling_after(
    entries: Mapping[str, Mapping[str, Resource]],
    refcounts: Mapping[str, Mapping[str, int]],
    changed: Mapping[str, set[str]],
    added: list[Resource],
) -> list[str]:
    """Dangling references an evolve introduced: new references to missing names, and removed names
    something still refers to."""
    errors: list[str] = []
    for resource in added:
        for target, names in sorted(resource.references.items()):
            existing = entries.get(target, _EMPTY)
            errors += [_describe(resource, target, n) for n in sorted(names) if n not in existing]
    for type_url, changed_names in changed.items():
        existing, counts = entries.get(type_url, _EMPTY), refcounts.get(type_url, {})
        for name in sorted(changed_names):
            if name not in existing and counts.get(name, 0) > 0:
                errors.append(f"removed {short_name(type_url)} {name!r} is still referred to")
    return errors
