"""What the xDS server tells the rest of the control plane about each connected Envoy."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Rejection:
    """One resource a node refused: Envoy applies a response's resources one by one and names the
    ones it could not apply (server/rejections.py works out which)."""

    type_url: str
    name: str
    version: str | None  # the version refused; None: its removal was refused
    reason: str  # Envoy's words for this resource
    message: str  # Envoy's whole message


class SyncReporter(Protocol):
    """Called from the stream's task: implementations must return quickly (queue, don't await I/O)."""

    def connected(self, node_id: str, gateway_id: str) -> None: ...

    def disconnected(self, node_id: str, gateway_id: str) -> None: ...

    def acked(self, node_id: str, gateway_id: str, revision: int) -> None:
        """The node applied everything it needs of the snapshot of `revision`."""
        ...

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        """The node NACKed `version` of `type_url` with Envoy's error `message`."""
        ...

    def rejections(self, node_id: str, gateway_id: str, rejected: tuple[Rejection, ...]) -> None:
        """What the node refuses now (replaces the last report): reported when it changes, and before
        the stream's first `acked`, so a new stream's report replaces an earlier stream's."""
        ...


class NullReporter:
    def connected(self, node_id: str, gateway_id: str) -> None:
        pass

    def disconnected(self, node_id: str, gateway_id: str) -> None:
        pass

    def acked(self, node_id: str, gateway_id: str, revision: int) -> None:
        pass

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        pass

    def rejections(self, node_id: str, gateway_id: str, rejected: tuple[Rejection, ...]) -> None:
        pass


@dataclass(frozen=True)
class Report:
    kind: str  # "connected", "disconnected", "acked", "rejected" or "rejections"
    node_id: str
    gateway_id: str
    revision: int | None = None
    type_url: str | None = None
    version: str | None = None
    message: str | None = None
    rejections: tuple[Rejection, ...] = ()


class RecordingReporter:
    """Keeps every report, and lets a test await one."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self._recorded = asyncio.Event()

    def connected(self, node_id: str, gateway_id: str) -> None:
        self._record(Report("connected", node_id, gateway_id))

    def disconnected(self, node_id: str, gateway_id: str) -> None:
        self._record(Report("disconnected", node_id, gateway_id))

    def acked(self, node_id: str, gateway_id: str, revision: int) -> None:
        self._record(Report("acked", node_id, gateway_id, revision=revision))

    def rejected(self, node_id: str, gateway_id: str, type_url: str, version: str, message: str) -> None:
        report = Report("rejected", node_id, gateway_id, type_url=type_url, version=version, message=message)
        self._record(report)

    def rejections(self, node_id: str, gateway_id: str, rejected: tuple[Rejection, ...]) -> None:
        self._record(Report("rejections", node_id, gateway_id, rejections=rejected))

    def of_kind(self, kind: str) -> list[Report]:
        return [r for r in self.reports if r.kind == kind]

    async def wait_for(self, predicate: Callable[[Report], bool]) -> Report:
        """The first report matching; bound the wait with asyncio.timeout."""
        while True:
            for report in self.reports:
                if predicate(report):
                    return report
            self._recorded.clear()
            await self._recorded.wait()

    def _record(self, report: Report) -> None:
        self.reports.append(report)
        self._recorded.set()
