"""The newest Ubuntu LTS image family Canonical publishes on GCP, and its current image."""

from __future__ import annotations

import threading
import time

from google.cloud import compute_v1

from services.provisioner.backends.base import BackendError
from services.provisioner.backends.gcp.clients import GcpClients
from services.provisioner.hosts.ubuntu import newest_lts

UBUNTU_PROJECT = "ubuntu-os-cloud"
CACHE_SECONDS = 6 * 3600.0


class UbuntuImages:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def image(self, clients: GcpClients, architecture: str) -> str:
        """The self link of the current image of the newest LTS family for `architecture`."""
        with self._lock:
            cached = self._cache.get(architecture)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        images = clients.client(compute_v1.ImagesClient)
        request = compute_v1.ListImagesRequest(project=UBUNTU_PROJECT, filter='family eq "ubuntu-.*"')
        listed = images.list(request=request)
        arm = architecture == "ARM64"
        families = {
            image.family
            for image in listed
            if not image.deprecated.state and image.family.endswith("-arm64") == arm
        }
        family = newest_lts(sorted(families), name=str)
        if family is None:
            raise BackendError(
                f"gcp: no Ubuntu LTS image family for {architecture.lower()} in {UBUNTU_PROJECT}"
            )
        link = images.get_from_family(project=UBUNTU_PROJECT, family=family).self_link
        with self._lock:
            self._cache[architecture] = (time.monotonic(), link)
        return str(link)
