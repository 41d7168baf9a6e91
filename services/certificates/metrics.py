"""Each issued certificate's end of validity, for the metrics endpoint (alert well before it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from gatehouse import metrics
from gatehouse.client.mirror import RegistryMirror


class CertificateCollector:
    def __init__(self, mirror: RegistryMirror) -> None:
        self._mirror = mirror

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            metrics.CERTIFICATE_EXPIRY,
            "When the certificate served for the hostname stops being valid (Unix time)",
            labels=["project", "gateway", "hostname"],
        )
        for certificate in self._mirror.certificates.values():
            gateway = self._mirror.gateways.get(certificate.gateway_id)
            if gateway is None or not certificate.HasField("not_after"):
                continue
            for hostname in certificate.hostnames:
                expiry.add_metric([gateway.project, gateway.name, hostname], certificate.not_after.seconds)
        yield expiry
