"""`certificate: {type: acm, arn}`: the certificate lives in AWS Certificate Manager and TLS ends at
the load balancer; here it is only checked (exists, ISSUED, covers *.<domain>)."""

from __future__ import annotations

import asyncio
import fnmatch
from typing import Any

import boto3
import botocore.exceptions

from gatehouse.v1 import resources_pb2
from services.certificates.issuers.base import IssueError


def _covers(names: list[str], hostname: str) -> bool:
    return any(name == hostname or fnmatch.fnmatchcase(hostname, name) for name in names)


class AcmChecker:
    def __init__(self, client_factory: Any = None) -> None:
        self._client_factory = client_factory or (lambda region: boto3.client("acm", region_name=region))

    def _check(self, gateway: resources_pb2.Gateway) -> str:
        arn = gateway.spec.certificate.arn
        wildcard = f"*.{gateway.spec.domain}"
        try:
            found = self._client_factory(gateway.spec.region).describe_certificate(CertificateArn=arn)[
                "Certificate"
            ]
        except botocore.exceptions.ClientError as error:
            raise IssueError(
                f"ACM certificate {arn}: {error.response['Error'].get('Message', error)}"
            ) from None
        except botocore.exceptions.BotoCoreError as error:
            raise IssueError(f"ACM certificate {arn}: {error}") from None
        if found.get("Status") != "ISSUED":
            raise IssueError(f"ACM certificate {arn} is {found.get('Status')}, not ISSUED")
        names = [found.get("DomainName", ""), *found.get("SubjectAlternativeNames", [])]
        if not _covers(names, wildcard):
            raise IssueError(f"ACM certificate {arn} covers {', '.join(sorted(set(names)))}, not {wildcard}")
        return f"ACM certificate {arn} is ISSUED and covers {wildcard}; TLS ends at the load balancer"

    async def check(self, gateway: resources_pb2.Gateway) -> str:
        return await asyncio.to_thread(self._check, gateway)
