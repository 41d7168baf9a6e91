"""Benchmark: apply a service with HTTPS → its first valid HTTPS response, against a real ACME CA.

A `gatehouse server` (SQLite, the local backend, a real Envoy) and Pebble (its DNS answers
127.0.0.1, it validates HTTP-01 on the gateway's :80) run once; each sample applies a new service
on a gateway with a domain and polls `https://<name>.<domain>` (SNI, verified against Pebble's root)
until it answers 200. Two figures: from starting `gatehouse apply -y -d` (the CLI included), and
from the write having returned; then where the time goes, from the registry's watch feed: the
certificates service's share (ordering, the CA validating, finalising) and gateway_xds's share (the
challenge route acknowledged by Envoy, the issued certificate served over SDS).

    .venv/bin/python -m bench.https_first_response [--samples 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.xds_harness import machine, percentile
from gatehouse.client.connection import Stubs
from gatehouse.client.mirror import Change, RegistryMirror, follow
from gatehouse.v1 import registry_pb2
from services.common.probes import free_port
from tests.support.https import fetch_tls
from tests.support.pebble import Pebble
from tests.support.server import ServerProcess

DOMAIN = "bench.test"
DEADLINE_SECONDS = 60.0


def apply(server: ServerProcess, directory: Path, name: str, text: str, *flags: str) -> None:
    path = directory / f"{name}.dstack.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    result = server.cli("apply", "-f", str(path), "-y", *flags)
    if result.code != 0:
        raise SystemExit(f"apply {name} failed: {result.stderr}\n{server.log()[-3000:]}")


@dataclass
class Moments:
    """When the watch feed first showed each step, per hostname (perf_counter seconds)."""

    mirror: RegistryMirror = field(default_factory=RegistryMirror)
    challenge: dict[str, tuple[float, int]] = field(default_factory=dict)  # time, revision
    acked: dict[str, float] = field(default_factory=dict)
    issued: dict[str, float] = field(default_factory=dict)

    async def on_change(self, change: Change) -> None:
        now = time.perf_counter()
        for token in change.challenges:
            challenge = self.mirror.challenges.get(token)
            if challenge is not None:
                # The batch's revision: the challenge's own, or just after it.
                self.challenge.setdefault(challenge.hostname, (now, change.revision))
        for certificate in self.mirror.certificates.values():
            if certificate.state == "issued":
                for hostname in certificate.hostnames:
                    self.issued.setdefault(hostname, now)

    async def poll_acks(self, stubs: Stubs) -> None:
        """Envoys' acknowledgements are on the gateway's status, not on the feed: read it as the
        certificates service does, every 10 ms while a challenge waits."""
        request = registry_pb2.GetRequest(project="main", name="bench-gw")
        while True:
            waiting = {h: r for h, (_, r) in self.challenge.items() if h not in self.acked}
            if waiting:
                status = (await stubs.gateways.Get(request)).status
                acked = min((e.acked_revision for e in status.envoys if e.connected), default=0)
                now = time.perf_counter()
                for hostname, revision in waiting.items():
                    if acked >= revision:
                        self.acked[hostname] = now
            await asyncio.sleep(0.01)


def sample(server: ServerProcess, directory: Path, root_pem: str, index: int) -> tuple[float, float]:
    name = f"tls{index}"
    port = free_port()
    config = f"""
        type: service
        name: {name}
        gateway: bench-gw
        port: {port}
        auth: false
        commands:
          - python -m http.server {port}
        """
    started = time.perf_counter()
    apply(server, directory, name, config, "-d")
    written = time.perf_counter()
    deadline = written + DEADLINE_SECONDS
    host = f"{name}.{DOMAIN}"
    while fetch_tls(server.https_port, host, root_pem, timeout=2).status != 200:
        if time.perf_counter() > deadline:
            raise SystemExit(f"{host}: no valid HTTPS answer in {DEADLINE_SECONDS}s\n{server.log()[-3000:]}")
        time.sleep(0.01)
    answered = time.perf_counter()
    return answered - started, answered - written


def summary(samples: list[float]) -> str:
    return (
        f"p50 {percentile(samples, 0.5):5.2f} s  p90 {percentile(samples, 0.9):5.2f} s  "
        f"max {max(samples):5.2f} s  (n={len(samples)}, mean {statistics.fmean(samples):.2f})"
    )


async def run(samples: int) -> None:
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="https-bench-") as work:
        directory = Path(work)
        (directory / "pebble").mkdir()
        (directory / "home").mkdir()
        pebble = Pebble(directory / "pebble")
        pebble.start()
        server = ServerProcess(
            home=directory / "home",
            http_port=pebble.http_port,
            extra_env={
                "GATEHOUSE_ACME_DIRECTORY": pebble.directory_url,
                "GATEHOUSE_ACME_CA_BUNDLE": str(pebble.ca_bundle),
                "GATEHOUSE_DNS_SERVER": pebble.dns_server,
            },
        )
        stubs: Stubs | None = None
        watching: asyncio.Future[tuple[None, None]] | None = None
        try:
            server.start()
            stubs = Stubs.connect(server.api, server.system_token)
            moments = Moments()
            watching = asyncio.gather(
                follow(stubs.watch, moments.mirror, moments.on_change), moments.poll_acks(stubs)
            )
            gateway = f"type: gateway\nname: bench-gw\nbackend: local\nregion: local\ndomain: {DOMAIN}\n"
            await asyncio.to_thread(apply, server, directory, "gateway", gateway)
            root = pebble.root_pem()
            totals, after_write, steps = [], [], []
            for index in range(samples):
                started = time.perf_counter()
                total, since_write = await asyncio.to_thread(sample, server, directory, root, index)
                totals.append(total)
                after_write.append(since_write)
                host = f"tls{index}.{DOMAIN}"
                answered = started + total
                challenge = moments.challenge.get(host, (answered, 0))[0]
                acked = moments.acked.get(host, challenge)
                issued = moments.issued.get(host, answered)
                steps.append((challenge - started, acked - challenge, issued - acked, answered - issued))
            print("apply → first valid HTTPS response (Pebble, HTTP-01 through Envoy):")
            print(f"  from `gatehouse apply -y -d`: {summary(totals)}")
            print(f"  from the write returning:    {summary(after_write)}")
            print("where it goes (medians; the watch feed, and the gateway status read every 10 ms):")
            names = (
                "apply → challenge published (CLI, replica up, order placed)",
                "challenge → acknowledged by Envoy (gateway_xds)",
                "acknowledged → issued (self-check, CA validates, finalise)",
                "issued → first HTTPS 200 (gateway_xds: key, SDS, listener)",
            )
            for position, name in enumerate(names):
                print(f"  {name:62s} {statistics.median(s[position] for s in steps) * 1000:6.0f} ms")
        finally:
            if watching is not None:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            if stubs is not None:
                await stubs.close()
            server.stop()
            server.kill_data_plane()
            pebble.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10)
    asyncio.run(run(parser.parse_args().samples))


if __name__ == "__main__":
    main()
