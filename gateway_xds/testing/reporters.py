"""SyncReporters for tests and benchmarks: one that drops every report, one that keeps them."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from gateway_xds.server.reporter import Rejection


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
