"""The newest Ubuntu LTS AMI Canonical publishes in a region, looked up (and cached for a while)."""

from __future__ import annotations

import threading
import time
from typing import Any

from services.provisioner.backends.base import BackendError
from services.provisioner.hosts.ubuntu import newest_lts

CANONICAL = "099720109477"
CACHE_SECONDS = 6 * 3600.0
DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}


class UbuntuImages:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[float, str, str]] = {}
        self._lock = threading.Lock()

    def image(self, ec2: Any, region: str, architecture: str) -> tuple[str, str]:
        """The image's id and its root device name."""
        key = (region, architecture)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1], cached[2]
        pattern = f"ubuntu/images/hvm-ssd*/ubuntu-*-{DEBIAN_ARCH.get(architecture, architecture)}-server-*"
        images = ec2.describe_images(
            Owners=[CANONICAL],
            Filters=[
                {"Name": "name", "Values": [pattern]},
                {"Name": "architecture", "Values": [architecture]},
                {"Name": "state", "Values": ["available"]},
            ],
        )["Images"]
        # Within a release the newest build (the date closing the name) wins, gp3 volumes before gp2.
        best = newest_lts(
            images,
            name=lambda image: image["Name"].rsplit("/", 1)[-1],
            built=lambda image: f"{image['Name'].rsplit('/', 1)[-1]} {'gp3' in image['Name']}",
        )
        if best is None:
            raise BackendError(f"aws: no Ubuntu LTS image for {architecture} in {region}")
        found = (str(best["ImageId"]), str(best.get("RootDeviceName") or "/dev/sda1"))
        with self._lock:
            self._cache[key] = (time.monotonic(), *found)
        return found
