"""A moto_server on loopback, shared by the aws tests, with Canonical's current Ubuntu images."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import boto3

from services.common.probes import free_port
from tests.fakes.aws_strict import StrictAws
from tests.support.real import require_real

# The AWS services the tests call through moto.
MotoService = Literal["ec2", "elbv2", "acm", "route53"]

CANONICAL = "099720109477"
REGION = "eu-west-1"
START_TIMEOUT_SECONDS = 30.0


def _ubuntu(ami_id: str, name: str, architecture: str = "x86_64") -> dict[str, Any]:
    return {
        "ami_id": ami_id,
        "state": "available",
        "public": True,
        "owner_id": CANONICAL,
        "image_location": f"{CANONICAL}/{name}",
        "sriov": "simple",
        "root_device_type": "ebs",
        "root_device_name": "/dev/sda1",
        "description": "Canonical, Ubuntu",
        "image_type": "machine",
        "platform": None,
        "architecture": architecture,
        "name": name,
        "virtualization_type": "hvm",
        "hypervisor": "xen",
    }


# The images the backend must choose between: the newest LTS build wins over an older LTS, an older
# build of the same release, a newer interim release and another architecture.
NOBLE_CURRENT = "ami-0c0ffee24040002"
UBUNTU_IMAGES = [
    _ubuntu("ami-0c0ffee22040001", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20250301"),
    _ubuntu("ami-0c0ffee24040001", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20241001"),
    _ubuntu(NOBLE_CURRENT, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250115"),
    _ubuntu("ami-0c0ffee24100001", "ubuntu/images/hvm-ssd-gp3/ubuntu-oracular-24.10-amd64-server-20250201"),
    _ubuntu(
        "ami-0c0ffee24040a01", "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-arm64-server-20250115", "arm64"
    ),
]


def _moto_images() -> list[dict[str, Any]]:
    packaged = resources.files("moto").joinpath("ec2/resources/amis.json.gz").read_bytes()
    return [*json.loads(gzip.decompress(packaged)), *UBUNTU_IMAGES]


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]
    # The strictness proxy `url` points at, when there is one (its findings, its quotas).
    strict: StrictAws | None = None

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def client(self, service: MotoService, access_key: str = "testing", secret_key: str = "testing") -> Any:
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
        )


def start_moto(workdir: Path, env: dict[str, str] | None = None) -> Iterator[MotoServer]:
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists() and shutil.which("moto_server") is None:
        require_real("no moto_server: install the dev extra (pip install -e '.[dev]')")
    images = workdir / "amis.json"
    images.write_text(json.dumps(_moto_images()))
    port = free_port()
    full_env = {**os.environ, "MOTO_AMIS_PATH": str(images), **(env or {})}
    with (workdir / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [str(binary if binary.exists() else "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    "moto_server did not start:\n" + (workdir / "moto.log").read_text()
                ) from None
            time.sleep(0.1)
    try:
        yield MotoServer(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
