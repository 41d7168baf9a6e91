"""Route 53 as the DNS provider for DNS-01 (boto3, in worker threads)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import boto3

from services.certificates.issuers.base import IssueError

INSYNC_TIMEOUT_SECONDS = 120.0


class Route53Provider:
    def __init__(self, endpoint_url: str | None = None, client: Any = None) -> None:
        self._client = client or boto3.client("route53", endpoint_url=endpoint_url)

    def _zone_id(self, name: str) -> str:
        """The hosted zone with the longest name that `name` is in."""
        fqdn = name.rstrip(".") + "."
        best: tuple[int, str] | None = None
        for page in self._client.get_paginator("list_hosted_zones").paginate():
            for zone in page["HostedZones"]:
                zone_name = zone["Name"]
                if (fqdn == zone_name or fqdn.endswith("." + zone_name)) and (
                    best is None or len(zone_name) > best[0]
                ):
                    best = (len(zone_name), zone["Id"])
        if best is None:
            raise IssueError(f"no Route 53 hosted zone holds {name}: create one for the gateway's domain")
        return best[1]

    def _change(self, action: str, name: str, value: str) -> None:
        zone = self._zone_id(name)
        change = self._client.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={
                "Comment": "gatehouse ACME DNS-01",
                "Changes": [
                    {
                        "Action": action,
                        "ResourceRecordSet": {
                            "Name": name,
                            "Type": "TXT",
                            "TTL": 60,
                            "ResourceRecords": [{"Value": f'"{value}"'}],
                        },
                    }
                ],
            },
        )
        change_id = change["ChangeInfo"]["Id"]
        deadline = time.monotonic() + INSYNC_TIMEOUT_SECONDS
        while self._client.get_change(Id=change_id)["ChangeInfo"]["Status"] != "INSYNC":
            if time.monotonic() > deadline:
                raise IssueError(
                    f"Route 53 did not apply the TXT record {name} in {INSYNC_TIMEOUT_SECONDS:.0f}s"
                )
            time.sleep(2)

    async def set_txt(self, name: str, value: str) -> None:
        await asyncio.to_thread(self._change, "UPSERT", name, value)

    async def remove_txt(self, name: str, value: str) -> None:
        await asyncio.to_thread(self._change, "DELETE", name, value)
