"""Benchmark: the replicated control plane. Two registries and two gateway_xds on one PostgreSQL, as
real processes, each gateway_xds following its own registry first; a real Envoy streams from
gateway_xds B.

- write → first 200: a service and its replica written on registry A (so the change reaches
  gateway_xds B through B's registry hearing A's commit), against the same written on registry B,
  side by side in one run, each a lone change (after a quiet QUIET_SECONDS);
- failover: a second Envoy naming both gateway_xds copies; the copy it streams from is killed with
  SIGKILL and a change written at that moment; the time until that change answers 200.

    .venv/bin/python -m bench.replicated_control_plane [--samples 30] [--failovers 5]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from bench.xds_harness import HttpProbe, machine, percentile
from gatehouse.client.connection import Stubs
from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gatehouse.v1 import registry_pb2, resources_pb2
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.upstream import Upstream
from services.common.crypto import Cipher
from services.common.internal_ca import InternalCA
from tests.support.certs import client_files
from tests.support.replicated_plane import Plane, replicated_plane

DOMAIN = "bench.test"
QUIET_SECONDS = 0.35


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


class Bench:
    def __init__(self, plane: Plane, workdir: Path, upstream: Upstream) -> None:
        self.plane, self.workdir, self.upstream = plane, workdir, upstream
        self.admin = {
            copy: Stubs.connect(plane.registry_address(copy), plane.admin_tokens[copy]) for copy in "ab"
        }
        self.system = Stubs.connect(plane.registry_address("b"), plane.system_token)

    async def ca(self) -> InternalCA:
        sealed = await self.system.control_plane.GetInternalCA(registry_pb2.GetInternalCARequest())
        cipher = Cipher(self.plane.encryption_key.encode())
        return InternalCA.unsealed(sealed.certificate_pem, sealed.key_encrypted, cipher)

    async def gateway(self, name: str, xds_copies: tuple[str, ...]) -> tuple[EnvoyProcess, int]:
        """A running gateway (as a provisioner leaves it) and a real Envoy streaming from `xds_copies`."""
        port = free_port()
        configuration = {"type": "gateway", "name": name, "backend": "local", "region": "local"}
        configuration["domain"] = f"{name}.{DOMAIN}"
        request = registry_pb2.ApplyRequest(project="main", configuration=_struct(configuration))
        gateway = (await self.admin["b"].configurations.Apply(request)).gateway
        status = resources_pb2.GatewayStatus(
            state=resources_pb2.GATEWAY_STATE_RUNNING,
            hostname="127.0.0.1",
            listen_address="127.0.0.1",
            http_port=port,
        )
        await self.system.gateways.UpdateStatus(
            registry_pb2.UpdateGatewayStatusRequest(id=gateway.id, status=status)
        )
        workdir = self.workdir / name
        workdir.mkdir()
        xds = [("127.0.0.1", self.plane.of("xds", copy).port) for copy in xds_copies]
        params = BootstrapParams(
            gateway.id,
            0,
            *xds[0],
            admin_port=free_port(),
            tls=client_files(await self.ca(), gateway.id, workdir),
            other_xds=tuple(xds[1:]),
        )
        binary = envoy_binary()
        assert binary is not None, "no envoy binary beside the interpreter"
        envoy = EnvoyProcess(binary, workdir, render_bootstrap(params))
        envoy.start()
        await asyncio.to_thread(envoy.wait_ready)
        return envoy, port

    async def write(self, copy: str, gateway: str, name: str) -> None:
        service = {
            "type": "service",
            "name": name,
            "gateway": gateway,
            "port": 8000,
            "auth": False,
            "https": False,
        }
        request = registry_pb2.ApplyRequest(project="main", configuration=_struct(service))
        await self.admin[copy].configurations.Apply(request)
        replica = registry_pb2.RegisterReplicaRequest(
            project="main",
            service=name,
            id=f"{name}-0",
            address=f"127.0.0.1:{self.upstream.port}",
            ready=True,
            runner="bench",
        )
        await self.system.replicas.Register(replica)

    async def close(self) -> None:
        for stubs in (*self.admin.values(), self.system):
            await stubs.close()


async def write_to_first_200(bench: Bench, samples: int) -> dict[str, list[float]]:
    """Per copy written to: the whole (write → 200), and its parts (the writes; after the writes)."""
    envoy, port = await bench.gateway("written", ("b",))
    probe = HttpProbe(port)
    times: dict[str, list[float]] = {
        key: [] for key in ("a", "b", "a-write", "b-write", "a-after", "b-after")
    }
    try:
        for index in range(samples):
            for copy in ("a", "b"):  # interleaved: the machine's noise falls on both alike
                name = f"w{copy}{index}"
                started = time.perf_counter()
                await bench.write(copy, "written", name)
                written = time.perf_counter()
                await asyncio.to_thread(probe.wait_for, f"{name}.written.{DOMAIN}", 200)
                live = time.perf_counter()
                times[copy].append((live - started) * 1000)
                times[f"{copy}-write"].append((written - started) * 1000)
                times[f"{copy}-after"].append((live - written) * 1000)
                # A lone change each: the push throttle's burst (gateway_xds/server/throttle.py) is
                # full again. Changes back to back go out at 10 pushes a second per Envoy, by design.
                await asyncio.sleep(QUIET_SECONDS)
    finally:
        probe.close()
        envoy.stop()
    return times


def _streamed_from(bench: Bench, envoy: EnvoyProcess) -> str:
    assert envoy.process is not None
    output = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    for copy in "ab":
        port = bench.plane.of("xds", copy).port
        if re.search(rf"127\.0\.0\.1:{port}\s.*pid={envoy.process.pid},", output):
            return copy
    raise RuntimeError("the Envoy streams from no gateway_xds copy")


async def failovers(bench: Bench, rounds: int) -> list[float]:
    envoy, port = await bench.gateway("failover", ("a", "b"))
    probe = HttpProbe(port)
    seconds: list[float] = []
    try:
        for index in range(rounds):
            streamed = _streamed_from(bench, envoy)
            survivor = "b" if streamed == "a" else "a"
            killed = time.perf_counter()
            bench.plane.of("xds", streamed).kill()
            name = f"f{index}"
            await bench.write(survivor, "failover", name)
            await asyncio.to_thread(probe.wait_for, f"{name}.failover.{DOMAIN}", 200)
            seconds.append(time.perf_counter() - killed)
            bench.plane.of("xds", streamed).start()
            await asyncio.sleep(2.0)
    finally:
        probe.close()
        envoy.stop()
    return seconds


def _ms(samples: list[float]) -> str:
    return " ".join(f"p{int(q * 100)} {percentile(samples, q):6.1f}" for q in (0.5, 0.9, 0.99)) + " ms"


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--failovers", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as directory, Upstream(b"bench") as upstream:
        root = Path(directory)
        async with replicated_plane(root, roles=("registry", "xds"), prefer_own_registry=True) as plane:
            bench = Bench(plane, root, upstream)
            try:
                times = await write_to_first_200(bench, args.samples)
                failover = await failovers(bench, args.failovers)
            finally:
                await bench.close()
    print(f"machine: {machine()}; two registries and two gateway_xds on PostgreSQL, one Envoy")
    for copy, label in (("b", "same copy "), ("a", "other copy")):
        print(f"write on registry {copy.upper()} → 200 via gateway_xds B ({label}): {_ms(times[copy])}")
        print(f"    of which the two writes:              {_ms(times[f'{copy}-write'])}")
        print(f"    of which after them (feed, xDS, Envoy): {_ms(times[f'{copy}-after'])}")
    ratio = percentile(times["a"], 0.5) / percentile(times["b"], 0.5)
    print(f"other copy / same copy, p50: {ratio:.2f}x (aim: p50 ≤ 50 ms)")
    print(
        "failover (the Envoy's gateway_xds killed → a change written then answers 200), "
        f"{len(failover)} rounds: median {percentile(failover, 0.5):.2f} s, "
        f"worst {max(failover):.2f} s (aim ≤ 5 s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
