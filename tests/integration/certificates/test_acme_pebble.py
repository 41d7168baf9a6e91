"""ACME against a real CA (Pebble): accounts, DNS-01 wildcards, failures, the resolves-to-gateway
check, and the reconciler issuing and renewing through the registry."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from cryptography import x509
from google.protobuf import struct_pb2
from sqlalchemy import func, select

from gatehouse.v1 import registry_pb2, resources_pb2
from services.certificates.issuers.acme import AcmeIssuer
from services.certificates.issuers.base import ChallengeSolver, IssueError
from services.certificates.issuers.solvers import Dns01Solver
from services.certificates.reconciler import CertificatesReconciler
from services.certificates.resolve import NotPointingAtGateway, check_points_at
from services.certificates.settings import CertificateSettings
from services.registry.models import AcmeAccountRow, TlsCertificateRow
from tests.integration.certificates.conftest import RegistryHandle
from tests.support.pebble import ChallTestSrvDns, Pebble

pytestmark = pytest.mark.real


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(data)
    return result


async def running_gateway(registry: RegistryHandle, domain: str) -> resources_pb2.Gateway:
    name = f"gw-{secrets.token_hex(3)}"
    config = {"type": "gateway", "name": name, "backend": "local", "region": "local", "domain": domain}
    applied = await registry.admin.configurations.Apply(
        registry_pb2.ApplyRequest(project="main", configuration=_struct(config))
    )
    status = resources_pb2.GatewayStatus(
        state=resources_pb2.GATEWAY_STATE_RUNNING,
        hostname="127.0.0.1",
        listen_address="127.0.0.1",
        http_port=80,
    )
    return await registry.system.gateways.UpdateStatus(
        registry_pb2.UpdateGatewayStatusRequest(id=applied.gateway.id, status=status)
    )


def settings_for(pebble: Pebble, **extra: Any) -> CertificateSettings:
    return CertificateSettings(
        directory_url=pebble.directory_url,
        ca_bundle=str(pebble.ca_bundle),
        dns_server=pebble.dns_server,
        **extra,
    )


def verify_chain(chain_pem: str, root_pem: str, name: str) -> x509.Certificate:
    chain = x509.load_pem_x509_certificates(chain_pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    verifier = (
        x509.verification.PolicyBuilder()
        .store(x509.verification.Store([root]))
        .build_server_verifier(x509.DNSName(name))
    )
    verifier.verify(chain[0], chain[1:])
    return chain[0]


async def test_wildcard_through_dns01_with_one_stored_account(
    pebble: Pebble, registry: RegistryHandle
) -> None:
    gateway = await running_gateway(registry, "wild.test")
    issuer = AcmeIssuer(
        settings_for(pebble), registry.system, {"dns-01": Dns01Solver(ChallTestSrvDns(pebble))}
    )
    issued = await issuer.issue(gateway, ["*.wild.test"], "dns-01")
    leaf = verify_chain(issued.chain_pem, pebble.root_pem(), "app.wild.test")
    assert leaf.not_valid_after_utc == issued.not_after
    assert issued.not_before < issued.renew_after < issued.not_after
    # A second order reuses the stored account: a fresh issuer finds it in the registry.
    again = AcmeIssuer(
        settings_for(pebble), registry.system, {"dns-01": Dns01Solver(ChallTestSrvDns(pebble))}
    )
    await again.issue(gateway, ["*.wild.test"], "dns-01")
    async with registry.registry.ctx.db.read() as session:
        accounts = (await session.execute(select(AcmeAccountRow))).scalars().all()
    assert (
        len(accounts) == 1
        and b"PRIVATE" not in accounts[0].key_encrypted
        and b'"n"' not in accounts[0].key_encrypted
    )


async def test_a_failed_validation_is_a_clear_error(pebble: Pebble, registry: RegistryHandle) -> None:
    gateway = await running_gateway(registry, "nope.test")

    class WrongTxt(ChallTestSrvDns):
        async def set_txt(self, name: str, value: str) -> None:
            await super().set_txt(name, "not-the-validation")

    issuer = AcmeIssuer(settings_for(pebble), registry.system, {"dns-01": Dns01Solver(WrongTxt(pebble))})
    with pytest.raises(IssueError) as caught:
        await issuer.issue(gateway, ["*.nope.test"], "dns-01")
    assert pebble.directory_url in str(caught.value)


async def test_an_unreachable_ca_is_a_clear_error(registry: RegistryHandle) -> None:
    gateway = await running_gateway(registry, "down.test")
    settings = CertificateSettings(directory_url="https://127.0.0.1:9/dir")
    issuer = AcmeIssuer(settings, registry.system, {})
    with pytest.raises((IssueError, OSError)) as caught:
        await issuer.issue(gateway, ["a.down.test"], "http-01")
    assert "127.0.0.1:9" in str(caught.value)


async def test_names_must_resolve_to_the_gateway(pebble: Pebble) -> None:
    await check_points_at("ok.example.test", "127.0.0.1", pebble.dns_server)
    pebble.set_address("elsewhere.example.test", "10.9.9.9")
    with pytest.raises(NotPointingAtGateway) as caught:
        await check_points_at("elsewhere.example.test", "127.0.0.1", pebble.dns_server)
    assert str(caught.value) == (
        "elsewhere.example.test resolves to 10.9.9.9, not to gateway 127.0.0.1: add the wildcard record"
    )


async def test_the_reconciler_issues_stores_encrypted_and_renews(
    tmp_path_factory: pytest.TempPathFactory, registry: RegistryHandle
) -> None:
    short_lived = Pebble(tmp_path_factory.mktemp("pebble-short"), validity_seconds=9)
    short_lived.start()
    try:
        gateway = await running_gateway(registry, "renew.test")
        service = {"type": "service", "name": "api", "gateway": gateway.name, "port": 8000}
        await registry.admin.configurations.Apply(
            registry_pb2.ApplyRequest(project="main", configuration=_struct(service))
        )
        settings = settings_for(short_lived, dns_provider="challtestsrv")
        solvers: dict[str, ChallengeSolver] = {"dns-01": Dns01Solver(ChallTestSrvDns(short_lived))}
        reconciler = CertificatesReconciler(
            registry.system, settings, AcmeIssuer(settings, registry.system, solvers)
        )
        running = asyncio.create_task(reconciler.run())
        try:
            first = await _issued(registry, "*.renew.test", after_serial=None)
            verify_chain(first.chain_pem, short_lived.root_pem(), "api.renew.test")
            shown = await registry.admin.services.Get(registry_pb2.GetRequest(project="main", name="api"))
            assert shown.status.certificate == "issued"
            # Renewal at two thirds of the 9 s lifetime brings a new certificate.
            second = await _issued(registry, "*.renew.test", after_serial=_serial(first))
            assert _serial(second) != _serial(first)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        key = await registry.system.tls_certificates.GetKey(registry_pb2.GetTlsKeyRequest(id=second.id))
        assert "PRIVATE KEY" in key.private_key_pem
        async with registry.registry.ctx.db.read() as session:
            row = await session.get(TlsCertificateRow, second.id)
            count = (await session.execute(select(func.count()).select_from(TlsCertificateRow))).scalar_one()
        assert row is not None and row.key_encrypted and b"PRIVATE KEY" not in row.key_encrypted
        assert count >= 1
    finally:
        short_lived.stop()


def _serial(certificate: resources_pb2.TlsCertificate) -> int:
    return x509.load_pem_x509_certificate(certificate.chain_pem.encode()).serial_number


async def _issued(
    registry: RegistryHandle, hostname: str, after_serial: int | None, within: float = 30.0
) -> resources_pb2.TlsCertificate:
    deadline = asyncio.get_running_loop().time() + within
    last: list[resources_pb2.TlsCertificate] = []
    while asyncio.get_running_loop().time() < deadline:
        listed = await registry.admin.tls_certificates.List(
            registry_pb2.ListTlsCertificatesRequest(project="main")
        )
        last = [cert for cert in listed.certificates if hostname in cert.hostnames]
        for cert in last:
            if (
                cert.state == "issued"
                and cert.chain_pem
                and (after_serial is None or _serial(cert) != after_serial)
            ):
                return cert
        await asyncio.sleep(0.1)
    raise AssertionError(f"no issued certificate for {hostname}: {last}")


async def test_a_name_resolving_elsewhere_is_said_on_the_service(
    pebble: Pebble, registry: RegistryHandle
) -> None:
    gateway = await running_gateway(registry, "moved.test")
    service = {"type": "service", "name": "shop", "gateway": gateway.name, "port": 8000}
    await registry.admin.configurations.Apply(
        registry_pb2.ApplyRequest(project="main", configuration=_struct(service))
    )
    pebble.set_address("shop.moved.test", "10.20.30.40")
    settings = settings_for(pebble)
    reconciler = CertificatesReconciler(registry.system, settings, AcmeIssuer(settings, registry.system, {}))
    running = asyncio.create_task(reconciler.run())
    expected = (
        "failed: shop.moved.test resolves to 10.20.30.40, not to gateway 127.0.0.1: add the wildcard record"
    )
    try:
        deadline = asyncio.get_running_loop().time() + 20
        shown = None
        while asyncio.get_running_loop().time() < deadline:
            shown = await registry.admin.services.Get(registry_pb2.GetRequest(project="main", name="shop"))
            if shown.status.certificate == expected:
                break
            await asyncio.sleep(0.1)
        assert shown is not None and shown.status.certificate == expected
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
