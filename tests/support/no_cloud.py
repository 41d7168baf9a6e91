"""A host driver for tests of what a cloud backend plans: planning calls no cloud."""

from __future__ import annotations

from typing import NoReturn

from services.provisioner.backends.base import HostInfo
from services.provisioner.backends.cloud import CloudHost
from services.provisioner.hosts.plan import GatewayPlan


def _no_cloud() -> NoReturn:
    raise AssertionError("a plan calls no cloud")


class NoCloud:
    def instance_type(self, plan: GatewayPlan) -> str:
        _no_cloud()

    def prepare(self, plan: GatewayPlan) -> None:
        _no_cloud()

    def hosts(self, plan: GatewayPlan) -> list[CloudHost]:
        _no_cloud()

    def create_host(self, plan: GatewayPlan, index: int, instance_type: str, fingerprint: str) -> None:
        _no_cloud()

    def delete_host(self, plan: GatewayPlan, host: CloudHost) -> None:
        _no_cloud()

    def expose(self, plan: GatewayPlan, hosts: list[CloudHost]) -> HostInfo:
        _no_cloud()

    def delete_all(self, plan: GatewayPlan) -> list[str]:
        _no_cloud()

    def translate(self, error: Exception) -> Exception:
        _no_cloud()
