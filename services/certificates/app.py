"""The certificates process: settings, issuers and solvers, the reconciler."""

from __future__ import annotations

from gatehouse.client.connection import Stubs
from services.certificates.issuers.acme import AcmeIssuer
from services.certificates.issuers.base import ChallengeSolver
from services.certificates.issuers.solvers import Dns01Solver, DnsProvider, Http01Solver
from services.certificates.reconciler import CertificatesReconciler
from services.certificates.route53 import Route53Provider
from services.certificates.settings import CertificateSettings


def build_certificates(stubs: Stubs, dns_provider: DnsProvider | None = None) -> CertificatesReconciler:
    settings = CertificateSettings.from_env()
    solvers: dict[str, ChallengeSolver] = {"http-01": Http01Solver(stubs)}
    if dns_provider is None and settings.dns_provider == "route53":
        dns_provider = Route53Provider()
    if dns_provider is not None:
        solvers["dns-01"] = Dns01Solver(dns_provider)
        if settings.dns_provider is None:
            settings = CertificateSettings(**{**settings.__dict__, "dns_provider": "custom"})
    return CertificatesReconciler(stubs, settings, AcmeIssuer(settings, stubs, solvers))
