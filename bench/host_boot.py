"""Benchmark: a cloud gateway host's startup data per cloud, and boot → serving in the host simulation.

Startup data: what each cloud API is sent for one host (AWS user data, the GCP `startup-script`
metadata value, Azure custom data before its base64, the Kubernetes Secret), for a typical gateway
and for the largest realistic one (`tests/support/startup_data.py`: mTLS on, 253-character control
plane names, a mirrored image pinned by digest, 10,000 mapped ports, 50 long tags), against each
provider's limit (`services/provisioner/hosts/limits.py`).

Boot → serving: the registry, gateway_xds (mTLS), the join endpoint and the provisioner in this
process around `tests/integration/provisioner/cloudsim.SimulatedCloud`: each sample applies a new
gateway, the host the provisioner makes runs its very startup data (unpacking it, joining for its
certificate) and starts a real Envoy, and the gateway is polled (every 10 ms) until it is running,
which it is once that Envoy has connected and acknowledged its configuration. What a real VM adds
(booting, installing Docker, pulling the image) is not in these figures: the simulation starts Envoy
where systemd would start `docker run`.

    .venv/bin/python -m bench.host_boot [--samples 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.xds_harness import machine, percentile
from gatehouse.v1 import registry_pb2, resources_pb2
from services.provisioner.hosts import limits
from tests.integration.provisioner.cloudsim import simulated_stack
from tests.support.startup_data import CLOUDS, startup_data

LIMITS = {
    "aws": limits.EC2_USER_DATA_BYTES,
    "gcp": limits.GCE_METADATA_VALUE_BYTES,
    "azure": limits.AZURE_CUSTOM_DATA_BYTES,
    "kubernetes": limits.KUBERNETES_SECRET_BYTES,
}
DEADLINE_SECONDS = 60.0


def sizes(directory: Path) -> None:
    print("startup data per host (bytes sent / what it carries / the limit):")
    for cloud in CLOUDS:
        limit = LIMITS[cloud]
        for kind, largest in (("typical", False), ("largest", True)):
            data = startup_data(cloud, directory, largest=largest)
            sent = len(data.sent.encode())
            print(
                f"  {cloud:<10} {kind:<8} {sent:>6} / {data.carried_bytes:>6} / {limit:>7}"
                f"  ({100 * sent / limit:.1f}% of the limit)"
            )


async def boot_to_serving(directory: Path, samples: int) -> None:
    figures: dict[str, list[float]] = {
        "apply → running": [],
        "host made → running": [],
        "  startup data run (unpack, join)": [],
        "  Envoy started → connected": [],
        "  connected → configuration ACKed": [],
        "  ACKed → running (provisioner's poll)": [],
    }
    for sample in range(samples):
        async with simulated_stack(directory / f"sample-{sample}", host_deadline=DEADLINE_SECONDS) as stack:
            applied = time.time()
            gateway = await stack.apply_gateway("edge")
            node = f"gateway/{gateway.id}/0"
            request = registry_pb2.GetRequest(project="main", name="edge")
            connected = acked = addressed = None
            async with asyncio.timeout(DEADLINE_SECONDS):
                while True:
                    current = await stack.registry.gateways.Get(request)
                    now = time.time()
                    if addressed is None and current.status.listen_address:
                        addressed = current.resource_version
                    envoy = next((e for e in current.status.envoys if e.node_id == node), None)
                    if connected is None and envoy is not None and envoy.connected:
                        connected = now
                    if (
                        acked is None
                        and envoy is not None
                        and addressed
                        and envoy.acked_revision >= addressed
                    ):
                        acked = now
                    if current.status.state == resources_pb2.GATEWAY_STATE_RUNNING:
                        break
                    await asyncio.sleep(0.01)
            [host] = stack.cloud.hosts_by_id.values()
            assert host.script_seconds is not None and host.booted_in is not None
            assert connected is not None and acked is not None
            envoy_started = host.launched_at + host.booted_in
            for label, value in zip(
                figures,
                (
                    now - applied,
                    now - host.launched_at,
                    host.script_seconds,
                    connected - envoy_started,
                    acked - connected,
                    now - acked,
                ),
                strict=True,
            ):
                figures[label].append(1000 * value)
    print(f"boot → serving in the host simulation (n={samples}, one real Envoy, --concurrency 1):")
    for label, series in figures.items():
        print(
            f"  {label:<40} p50 {percentile(series, 0.5):7.1f} ms  max {max(series):7.1f} ms"
            f"  (mean {statistics.fmean(series):.1f})"
        )
    print(
        json.dumps(
            {label.strip(): [round(value, 1) for value in series] for label, series in figures.items()}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="gh-boot-") as scratch:
        sizes(Path(scratch))
        asyncio.run(boot_to_serving(Path(scratch), args.samples))


if __name__ == "__main__":
    main()
