"""The startup script every cloud gateway host runs once at first boot (AWS user data, GCP
`startup-script`, Azure custom data).

It writes the Envoy bootstrap, installs Docker when the image lacks it, and starts the official
Envoy image under systemd with host networking, so Envoy binds :80, :443 and mapped ports directly
and restarts with the host. Everything else reaches Envoy over xDS: no SSH, no configuration pushed.

`GATEHOUSE_ROOT` (empty on a real host) prefixes every path the script writes, so tests run the
very script a host runs in a scratch directory and start a real Envoy with the bootstrap it wrote.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

# The official image; the Kubernetes backend runs the same one.
ENVOY_IMAGE = "envoyproxy/envoy:v1.40-latest"

CONFIG_DIR = "/etc/gatehouse"
BOOTSTRAP_PATH = f"{CONFIG_DIR}/envoy.json"
JOIN_TOKEN_PATH = f"{CONFIG_DIR}/join-token"
CLIENT_KEY_PATH = f"{CONFIG_DIR}/xds-client.key"
CLIENT_CERTIFICATE_PATH = f"{CONFIG_DIR}/xds-client.pem"
CLIENT_REQUEST_PATH = f"{CONFIG_DIR}/xds-client.csr"
CA_PATH = f"{CONFIG_DIR}/xds-ca.pem"
UNIT_NAME = "gatehouse-envoy.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
CONTAINER_NAME = "gatehouse-envoy"


@dataclass(frozen=True)
class HostStartup:
    bootstrap: dict[str, Any]
    envoy_image: str = ENVOY_IMAGE
    # A single-use, expiring token the host exchanges at `join.url` for its xDS client certificate.
    join_token: str | None = field(default=None, repr=False)
    join: JoinEndpoint | None = None


@dataclass(frozen=True)
class JoinEndpoint:
    """Where hosts exchange their join token, and the CA (public) that signed its certificate."""

    url: str
    ca_pem: str


def envoy_args(bootstrap_path: str = BOOTSTRAP_PATH) -> list[str]:
    """Envoy's command line on a host (after the image name)."""
    return ["-c", bootstrap_path, "--log-level", "warn"]


def _docker_run(image: str) -> str:
    argv = [
        "/usr/bin/docker",
        "run",
        "--rm",
        "--name",
        CONTAINER_NAME,
        "--network",
        "host",
        # The image drops to uid 101 by default, which cannot bind :80 and :443.
        "--env",
        "ENVOY_UID=0",
        "--volume",
        f"{CONFIG_DIR}:{CONFIG_DIR}:ro",
        image,
        *envoy_args(),
    ]
    return shlex.join(argv)


def _unit(image: str) -> str:
    return f"""[Unit]
Description=Gatehouse gateway Envoy
Wants=network-online.target
After=docker.service network-online.target
Requires=docker.service

[Service]
ExecStartPre=-/usr/bin/docker rm --force {CONTAINER_NAME}
ExecStart={_docker_run(image)}
ExecStop=/usr/bin/docker stop {CONTAINER_NAME}
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def _heredoc(path: str, content: str, marker: str, mode: str = "0644") -> str:
    if marker in content:
        raise ValueError(f"{path}: content contains the heredoc marker {marker}")
    return (
        f'install -D -m {mode} /dev/null "$root{path}"\n'
        f"cat > \"$root{path}\" <<'{marker}'\n{content.rstrip()}\n{marker}\n"
    )


def exchange_join_token(join_url: str) -> str:
    """Shell: make a key on the host and trade the join token and a certificate request for a client
    certificate naming the gateway; the key never leaves the host, the token is deleted after use."""
    key, request, certificate = (
        f'"$root{path}"' for path in (CLIENT_KEY_PATH, CLIENT_REQUEST_PATH, CLIENT_CERTIFICATE_PATH)
    )
    return (
        f"if [ ! -s {certificate} ]; then\n"
        "  (umask 077 && openssl ecparam -name prime256v1 -genkey -noout \\\n"
        f"    | openssl pkcs8 -topk8 -nocrypt -out {key})\n"
        f"  openssl req -new -key {key} -subj /CN=gatehouse-host -out {request}\n"
        f"  curl --fail --silent --show-error --retry 30 --retry-delay 2 --retry-connrefused \\\n"
        f'    --cacert "$root{CA_PATH}" -H "Authorization: Bearer $(cat "$root{JOIN_TOKEN_PATH}")" \\\n'
        f"    --data-binary @{request} -o {certificate} {shlex.quote(join_url)}\n"
        "fi\n"
        f'rm -f "$root{JOIN_TOKEN_PATH}" {request}\n'
    )


def render_startup_script(startup: HostStartup) -> str:
    bootstrap = json.dumps(startup.bootstrap, indent=2, sort_keys=True)
    token = ""
    if startup.join_token is not None and startup.join is not None:
        token = (
            _heredoc(JOIN_TOKEN_PATH, startup.join_token, "GATEHOUSE_JOIN_TOKEN", mode="0600")
            + _heredoc(CA_PATH, startup.join.ca_pem, "GATEHOUSE_CA")
            + exchange_join_token(startup.join.url)
        )
    return (
        "#!/bin/bash\n"
        "# Gatehouse gateway host: writes the Envoy bootstrap and runs Envoy; routes arrive over xDS.\n"
        "set -euo pipefail\n"
        'root="${GATEHOUSE_ROOT:-}"\n'
        + _heredoc(BOOTSTRAP_PATH, bootstrap, "GATEHOUSE_BOOTSTRAP")
        + token
        + _heredoc(UNIT_PATH, _unit(startup.envoy_image), "GATEHOUSE_UNIT")
        + "if ! command -v docker >/dev/null 2>&1; then\n"
        "  export DEBIAN_FRONTEND=noninteractive\n"
        "  apt-get update -q\n"
        "  apt-get install -y -q docker.io\n"
        "fi\n"
        "systemctl daemon-reload\n"
        f"systemctl enable --now {UNIT_NAME}\n"
    )
