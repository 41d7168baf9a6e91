"""The newest Ubuntu LTS offer Canonical publishes in an Azure location."""

from __future__ import annotations

import threading
import time

from azure.mgmt.compute.models import ImageReference

from services.provisioner.backends.azure.clients import AzureClients
from services.provisioner.backends.base import BackendError
from services.provisioner.hosts.ubuntu import newest_lts

CANONICAL = "Canonical"
SKU = "server"
CACHE_SECONDS = 6 * 3600.0


class UbuntuImages:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def reference(self, clients: AzureClients, location: str) -> ImageReference:
        with self._lock:
            cached = self._cache.get(location)
        if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
            offers = clients.compute.virtual_machine_images.list_offers(location, CANONICAL)
            # Offers named like `ubuntu-24_04-lts`; the older `0001-com-ubuntu-server-*` ones are left out.
            offer = newest_lts(
                [o.name for o in offers if o.name.startswith("ubuntu-") and o.name.endswith("-lts")], name=str
            )
            if offer is None:
                raise BackendError(f"azure: no Ubuntu LTS image offer from {CANONICAL} in {location}")
            skus = {
                sku.name
                for sku in clients.compute.virtual_machine_images.list_skus(location, CANONICAL, offer)
            }
            if SKU not in skus:
                raise BackendError(f"azure: {CANONICAL} {offer} has no {SKU} image in {location}")
            cached = (time.monotonic(), offer)
            with self._lock:
                self._cache[location] = cached
        return ImageReference(publisher=CANONICAL, offer=cached[1], sku=SKU, version="latest")
