"""What one stream wants its node to have: the gateway's snapshot, plus the clusters it still keeps
until the node has stopped routing to them (make-before-break)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from gateway_xds.cache.resource import Resource
from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.resources import WILDCARD_TYPES

# type URL -> name -> the resource as last offered (None when only the node knows it).
Retained = Mapping[str, Mapping[str, Resource | None]]


@dataclass(frozen=True)
class DesiredView:
    snapshot: Snapshot
    retained: Retained = field(default_factory=dict)

    def get(self, type_url: str, name: str) -> Resource | None:
        found = self.snapshot.get(type_url, name)
        if found is not None:
            return found
        return self.retained.get(type_url, {}).get(name)

    def keeps(self, type_url: str, name: str) -> bool:
        """Whether the node should have `name` (a retained name may have no resource object)."""
        return self.snapshot.get(type_url, name) is not None or name in self.retained.get(type_url, {})

    def names(self, type_url: str) -> Iterator[str]:
        yield from self.snapshot.entries(type_url)
        for name in self.retained.get(type_url, {}):
            if self.snapshot.get(type_url, name) is None:
                yield name

    def is_required(self, type_url: str, name: str) -> bool:
        """Whether the node needs `name` to have applied the view."""
        if type_url in WILDCARD_TYPES:
            return self.get(type_url, name) is not None
        if self.snapshot.is_required(type_url, name):
            return True
        return any(
            name in resource.references.get(type_url, ())
            for by_name in self.retained.values()
            for resource in by_name.values()
            if resource is not None
        )

    def token(self, type_url: str) -> int:
        value = self.snapshot.token(type_url)
        for name, resource in self.retained.get(type_url, {}).items():
            if resource is not None and self.snapshot.get(type_url, name) is None:
                value ^= resource.token
        return value

    def version(self, type_url: str) -> str:
        return format(self.token(type_url), "032x")
