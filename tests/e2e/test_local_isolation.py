"""One machine, many tenants: local gateways that never share an address, replicas that never share
a network, and failures that say so."""

from __future__ import annotations

import collections
import json
import stat
import textwrap
import time
from pathlib import Path

import pytest

from gatehouse.agent_tunnels import DEFAULT_TUNNEL_PORT
from services.common.listening import group_holds, listening
from services.provisioner.backends.local.gateway import admin_socket_path
from tests.support.gateways import gateway_host
from tests.support.http import fetch
from tests.support.server import ServerProcess

pytestmark = pytest.mark.real

PROJECTS = ("main", "tenant-b")
REQUESTS = 200
# Seed 004's command, after a line that leaves a marker naming the replica that answers.
MARKED_SEED = ["echo $GATEHOUSE_SERVICE-$GATEHOUSE_REPLICA > marker.txt", "python -m http.server 8000"]


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _apply(server: ServerProcess, path: Path, project: str, *extra: str) -> None:
    result = server.cli("--project", project, "apply", "-f", str(path), "-y", *extra)
    assert result.code == 0, result.stderr + server.log()[-3000:]


def _service(server: ServerProcess, name: str, project: str = "main") -> dict[str, object]:
    shown = server.cli("--project", project, "service", "get", name, "--json")
    assert shown.code == 0, shown.stderr
    result: dict[str, object] = json.loads(shown.stdout)
    return result


def _replica_ids(server: ServerProcess, name: str, project: str = "main") -> list[str]:
    listed = server.cli("--project", project, "replica", "list", name, "--json")
    assert listed.code == 0, listed.stderr
    return sorted(replica["id"] for replica in json.loads(listed.stdout).get("replicas", []))


@pytest.fixture(scope="module")
def tenants(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two projects with two local gateways each; every gateway has a service on 5001:8000 with two
    replicas. Returns each service's gateway address."""
    assert server.cli("project", "create", PROJECTS[1]).code == 0
    directory = tmp_path_factory.mktemp("tenants")
    addresses = {}
    for project in PROJECTS:
        for side in ("one", "two"):
            gateway = f"{project}-gw-{side}"
            config = _write(
                directory,
                f"{gateway}.dstack.yml",
                f"type: gateway\nname: {gateway}\nbackend: local\nregion: local\n",
            )
            _apply(server, config, project)
            name = f"{project}-{side}"
            service = directory / f"{name}.dstack.yml"
            service.write_text(
                json.dumps(
                    {
                        "type": "service",
                        "name": name,
                        "gateway": gateway,
                        "port": "5001:8000",
                        "replicas": 2,
                        # The first project's services keep the default `auth: true`.
                        "auth": project == PROJECTS[0],
                        "commands": MARKED_SEED,
                    }
                )
            )
            _apply(server, service, project)
            addresses[name] = gateway_host(server, gateway, project)
    return addresses


def test_each_service_on_a_shared_port_number_reaches_only_its_own_replicas(
    server: ServerProcess, tenants: dict[str, str]
) -> None:
    assert len(set(tenants.values())) == 4  # an address per gateway, across both projects
    for name, address in tenants.items():
        token = server.token if name.startswith(PROJECTS[0]) else None
        answered = collections.Counter(
            fetch(f"http://{address}:5001/marker.txt", token=token)[1].strip() for _ in range(REQUESTS)
        )
        # Every answer from one of its own two replicas, and both of them answering.
        assert set(answered) == {f"{name}-0", f"{name}-1"}, answered


def test_an_authenticated_service_is_not_answered_by_another_projects_gateway(
    server: ServerProcess, tenants: dict[str, str]
) -> None:
    protected = f"{PROJECTS[0]}-one"
    status, _ = fetch(f"http://{tenants[protected]}:5001/marker.txt")
    assert status == 401
    for name, address in tenants.items():
        if name != protected:
            assert (
                fetch(f"http://{address}:5001/marker.txt", token=server.token)[1].strip() != f"{protected}-0"
            )


def test_seed_004_command_with_three_replicas_serves_from_all_three(
    server: ServerProcess, tenants: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "three.dstack.yml"
    config.write_text(
        json.dumps(
            {
                "type": "service",
                "name": "three",
                "gateway": f"{PROJECTS[0]}-gw-one",
                "port": "5002:8000",
                "replicas": 3,
                "auth": False,
                "commands": MARKED_SEED,
            }
        )
    )
    _apply(server, config, PROJECTS[0])
    address = tenants[f"{PROJECTS[0]}-one"]
    # `apply` returns once one replica serves; the others join as they become ready.
    answered: set[str] = set()
    deadline = time.monotonic() + 30
    while len(answered) < 3 and time.monotonic() < deadline:
        answered.add(fetch(f"http://{address}:5002/marker.txt")[1].strip())
    assert answered == {"three-0", "three-1", "three-2"}
    assert "3/3" in server.cli("service", "list").stdout
    assert server.cli("delete", "-f", str(config), "-y").code == 0


def test_a_crash_looping_replica_backs_off_and_apply_says_why(server: ServerProcess, tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        "crashing.dstack.yml",
        f"""
        type: service
        name: crashing
        gateway: {PROJECTS[0]}-gw-two
        port: "5003:8000"
        commands:
          - echo "cannot load the model" >&2
          - exit 7
        """,
    )
    result = server.cli("apply", "-f", str(config), "-y")
    assert result.code == 1
    [line] = result.stderr.strip().splitlines()
    assert 'service "crashing" failed: replica 0 exited with code 7: cannot load the model' in line
    assert "The service is available" not in result.stdout
    shown = _service(server, "crashing")
    assert "exited with code 7" in str(shown["status"])
    assert "exited with code 7" in server.cli("service", "list", "-v").stdout  # the ERROR column
    time.sleep(6)
    # Backing off 1 s, 2 s, 4 s: a handful of starts, not a few a second.
    starts = server.cli("service", "logs", "crashing").stdout.count("cannot load the model")
    assert 1 <= starts <= 5, starts
    assert server.cli("delete", "-f", str(config), "-y").code == 0


def test_apply_detach_delete_apply_leaves_exactly_the_replicas_asked_for(
    server: ServerProcess, tmp_path: Path
) -> None:
    config = _write(
        tmp_path,
        "slow.dstack.yml",
        f"""
        type: service
        name: slow
        gateway: {PROJECTS[0]}-gw-two
        port: "5004:8000"
        auth: false
        commands:
          - sleep 2
          - python -m http.server 8000
        """,
    )
    detached = server.cli("apply", "-f", str(config), "-y", "-d")
    assert detached.code == 0 and "once a replica is ready" in detached.stdout
    assert server.cli("delete", "-f", str(config), "-y").code == 0
    _apply(server, config, PROJECTS[0])
    service = _service(server, "slow")
    assert _replica_ids(server, "slow") == [f"{service['id']}-0"]
    time.sleep(3)  # past the first service's start: its replica must not come back under this name
    assert _replica_ids(server, "slow") == [f"{service['id']}-0"]
    assert "1/1" in server.cli("service", "list").stdout
    assert server.cli("delete", "-f", str(config), "-y").code == 0


def test_a_gateways_envoy_listens_only_on_its_address_and_admin_is_a_private_socket(
    server: ServerProcess, tenants: dict[str, str]
) -> None:
    address = tenants[f"{PROJECTS[1]}-one"]
    gateway_ids = [path.name for path in (server.home / "gateways").iterdir()]
    mine = []
    for gateway_id in gateway_ids:
        pid = int((server.home / "gateways" / gateway_id / "envoy.pid").read_text().split()[0])
        held = {listener for listener in listening() if group_holds(pid, {listener.inode})}
        if any(str(listener.address) == address for listener in held):
            mine.append((gateway_id, held))
    [(gateway_id, held)] = mine
    # The gateway's HTTP port, its service's mapped port and where agents open their tunnels (mTLS,
    # agents of its own services only), on its own address: nothing else (no admin port a replica
    # address such as 127.0.0.1:<port> could be pointed at).
    assert {(str(listener.address), listener.port) for listener in held} == {
        (address, server.http_port),
        (address, 5001),
        (address, DEFAULT_TUNNEL_PORT),
    }
    admin = Path(admin_socket_path(server.home / "gateways" / gateway_id)).stat()
    assert stat.S_ISSOCK(admin.st_mode) and stat.S_IMODE(admin.st_mode) == 0o600
