"""A real ACME CA for tests: Debian's Pebble with pebble-challtestsrv answering its DNS.

Pebble validates HTTP-01 on `http_port` of whatever the name resolves to; challtestsrv resolves
every name to 127.0.0.1, so a local gateway whose :80 is `http_port` answers the challenges.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from services.common.probes import free_port
from tests.support.certs import self_signed
from tests.support.real import require_real

START_TIMEOUT_SECONDS = 20.0


@dataclass
class Pebble:
    directory: Path
    http_port: int = field(default_factory=free_port)
    validity_seconds: int | None = None
    acme_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    challtest_management_port: int = field(default_factory=free_port)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def ca_bundle(self) -> Path:
        return self.directory / "listener.crt"

    @property
    def dns_server(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def start(self) -> None:
        for binary in ("pebble", "pebble-challtestsrv"):
            if shutil.which(binary) is None:
                require_real(f"{binary} is not installed (Debian package pebble; make test installs it)")
        cert, key = self_signed(self.directory, "listener", dns_names=("localhost",))
        config: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": self.http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_seconds is not None:
            config["certificateValidityPeriod"] = self.validity_seconds
        config_path = self.directory / "pebble-config.json"
        config_path.write_text(json.dumps({"pebble": config}))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="100")
        with open(self.directory / "challtestsrv.log", "wb") as log:
            self._processes.append(
                subprocess.Popen(
                    [
                        "pebble-challtestsrv",
                        "-dns01",
                        self.dns_server,
                        "-http01",
                        "",
                        "-https01",
                        "",
                        "-tlsalpn01",
                        "",
                        "-management",
                        f"127.0.0.1:{self.challtest_management_port}",
                        "-defaultIPv4",
                        "127.0.0.1",
                        "-defaultIPv6",
                        "",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        with open(self.directory / "pebble.log", "wb") as log:
            self._processes.append(
                subprocess.Popen(
                    ["pebble", "-config", str(config_path), "-dnsserver", self.dns_server],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                urllib.request.urlopen(self.directory_url, context=context, timeout=2).close()
                return
            except OSError as error:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        "pebble did not start:\n" + (self.directory / "pebble.log").read_text()
                    ) from error
                time.sleep(0.05)

    def root_pem(self) -> str:
        """The root of the certificates Pebble issues (a new one each start)."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return str(response.read().decode())

    def set_address(self, host: str, address: str) -> None:
        """Makes challtestsrv answer `host` with `address` (the resolves-to-gateway check reads it)."""
        body = json.dumps({"host": host, "addresses": [address]}).encode()
        url = f"http://127.0.0.1:{self.challtest_management_port}/add-a"
        urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=5).close()

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.wait(timeout=10)
        self._processes.clear()


class ChallTestSrvDns:
    """A DnsProvider writing TXT records into the DNS server Pebble asks (pebble-challtestsrv)."""

    def __init__(self, pebble: Pebble) -> None:
        self._url = f"http://127.0.0.1:{pebble.challtest_management_port}"

    def _post(self, path: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(self._url + path, data=json.dumps(body).encode(), method="POST")
        urllib.request.urlopen(request, timeout=5).close()

    async def set_txt(self, name: str, value: str) -> None:
        self._post("/set-txt", {"host": name.rstrip(".") + ".", "value": value})

    async def remove_txt(self, name: str, value: str) -> None:
        self._post("/clear-txt", {"host": name.rstrip(".") + "."})
