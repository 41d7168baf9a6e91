"""The certificates reconciler: issues, renews and removes the certificates the registry calls for.

Level-triggered: each key (a gateway and the names it covers) is looked at afresh every time. A
failed renewal keeps the current, still valid certificate serving and says so in its message.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

from google.protobuf.timestamp_pb2 import Timestamp

from gatehouse.client.connection import Stubs
from gatehouse.client.mirror import Change, RegistryMirror, follow
from gatehouse.leadership import Leadership
from gatehouse.v1 import registry_pb2, resources_pb2
from services.certificates.issuers.acm import AcmChecker
from services.certificates.issuers.acme import AcmeIssuer
from services.certificates.issuers.base import IssuedCertificate, IssueError
from services.certificates.resolve import NotPointingAtGateway, check_points_at
from services.certificates.settings import CertificateSettings
from services.certificates.wanted import WantedCertificate, certificate_key, wanted_certificates
from services.common.workqueue import Result, WorkQueue, run_queues

log = logging.getLogger(__name__)

RETRY_SECONDS = (5.0, 15.0, 30.0, 60.0, 300.0, 900.0)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _moment(value: Timestamp) -> datetime.datetime | None:
    if not value.ByteSize():
        return None
    return value.ToDatetime(tzinfo=datetime.UTC)


class CertificatesReconciler:
    def __init__(
        self, stubs: Stubs, settings: CertificateSettings, acme: AcmeIssuer, acm: AcmChecker | None = None
    ) -> None:
        self._stubs = stubs
        self._settings = settings
        self._acme = acme
        self._acm = acm or AcmChecker()
        self.mirror = RegistryMirror()
        self._wanted: dict[str, WantedCertificate] = {}
        self._failures: dict[str, int] = {}
        self._forced: set[str] = set()
        # Issued here but maybe not on the feed yet: not ordered again before it is due.
        self._issued_until: dict[str, datetime.datetime] = {}
        self._queue = WorkQueue("certificates", self.reconcile, workers=4)

    async def run(self, leadership: Leadership | None = None) -> None:
        """Follows the registry; issues and renews while this copy leads (always, without
        `leadership`)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(follow(self._stubs.watch, self.mirror, self._on_change))
            group.create_task(run_queues([self._queue], self._resync, leadership))

    async def _resync(self) -> None:
        # What is not in the registry is cleaned up: never judge that from a mirror not loaded yet.
        await self.mirror.loaded.wait()
        await self._on_change(Change(self.mirror.revision, resync=True))

    async def _on_change(self, change: Change) -> None:
        wanted = wanted_certificates(self.mirror, dns01=self._settings.dns_provider is not None)
        keys = {
            key for key in wanted.keys() | self._wanted.keys() if wanted.get(key) != self._wanted.get(key)
        }
        for certificate_id in change.certificates:
            certificate = self.mirror.certificates.get(certificate_id)
            if certificate is not None:
                keys.add(certificate_key(certificate))
        if change.resync or change.gateways:
            keys |= wanted.keys() | {certificate_key(cert) for cert in self.mirror.certificates.values()}
        self._wanted = wanted
        for key in keys:
            self._queue.add(key)

    def renew(self, project: str, hostname: str) -> bool:
        """Marks the certificate of `hostname` for renewal now; False when there is none."""
        for key, item in self._wanted.items():
            if item.project == project and hostname in item.hostnames:
                self._forced.add(key)
                self._queue.add(key)
                return True
        return False

    def _existing(self, key: str) -> resources_pb2.TlsCertificate | None:
        return next(
            (cert for cert in self.mirror.certificates.values() if certificate_key(cert) == key), None
        )

    async def _put(
        self,
        item: WantedCertificate,
        existing: resources_pb2.TlsCertificate | None,
        state: str,
        message: str,
        issued: IssuedCertificate | None = None,
    ) -> None:
        certificate = resources_pb2.TlsCertificate(
            id=existing.id if existing else "",
            gateway_id=item.gateway_id,
            hostnames=item.hostnames,
            issuer=item.issuer,
            state=state,
            message=message,
        )
        if issued is not None:
            certificate.chain_pem = issued.chain_pem
            certificate.not_after.FromDatetime(issued.not_after)
            certificate.renew_after.FromDatetime(issued.renew_after)
        elif existing is not None:
            certificate.chain_pem = existing.chain_pem
            certificate.not_after.CopyFrom(existing.not_after)
            certificate.renew_after.CopyFrom(existing.renew_after)
        if existing is not None and issued is None and (existing.state, existing.message) == (state, message):
            return
        await self._stubs.tls_certificates.Put(
            registry_pb2.PutTlsCertificateRequest(
                certificate=certificate, private_key_pem=issued.key_pem if issued else ""
            )
        )

    def _retry(self, key: str) -> Result:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return Result(requeue_after=RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])

    async def reconcile(self, key: str) -> Result:
        item = self._wanted.get(key)
        existing = self._existing(key)
        if item is None:
            if existing is not None:
                await self._stubs.tls_certificates.Delete(
                    registry_pb2.DeleteTlsCertificateRequest(id=existing.id)
                )
            self._failures.pop(key, None)
            self._issued_until.pop(key, None)
            return Result()
        gateway = self.mirror.gateways.get(item.gateway_id)
        if gateway is None or gateway.status.state != resources_pb2.GATEWAY_STATE_RUNNING:
            return Result()  # the gateway's next change brings this key back
        renew_after = _moment(existing.renew_after) if existing else None
        forced = key in self._forced
        just_issued = self._issued_until.get(key)
        if just_issued is not None and just_issued > _now() and not forced:
            return Result(requeue_after=(just_issued - _now()).total_seconds())
        if (
            existing is not None
            and existing.chain_pem
            and renew_after
            and renew_after > _now()
            and not forced
        ):
            return Result(requeue_after=(renew_after - _now()).total_seconds())
        valid = existing is not None and bool(existing.chain_pem)
        try:
            if item.issuer == "acm":
                message = await self._acm.check(gateway)
                await self._put(item, existing, "issued", message)
                return Result(requeue_after=3600.0)
            if item.solver == "http-01":
                await check_points_at(item.hostnames[0], gateway.status.hostname, self._settings.dns_server)
            if not valid:
                await self._put(item, existing, "pending", f"ordering from {self._acme.name}")
            issued = await self._acme.issue(gateway, item.hostnames, item.solver)
        except (IssueError, NotPointingAtGateway) as error:
            log.warning("certificate %s: %s", ", ".join(item.hostnames), error)
            if valid:
                await self._put(item, existing, "issued", f"renewal failed, retrying: {error}")
            else:
                await self._put(item, existing, "failed", str(error))
            return self._retry(key)
        self._failures.pop(key, None)
        self._forced.discard(key)
        await self._put(item, existing, "issued", "", issued)
        self._issued_until[key] = issued.renew_after
        return Result(requeue_after=max(1.0, (issued.renew_after - _now()).total_seconds()))
