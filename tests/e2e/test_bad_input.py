# ruff: noqa: E501
"""Every bad configuration a newcomer can write, applied with the CLI against a real server: each
gives exactly one line (`error: …`, nothing else on stdout or stderr), exit 1 or 2, no traceback,
no validator internals, and leaves nothing created (the list commands show what was there before)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

pytestmark = pytest.mark.real

INTERNALS = (
    "Traceback",
    "Input should",
    "literal[",
    "pydantic",
    "validation error",
    "0.01666",
    "Value error",
)

SERVICE = "type: service\nname: bad-svc\ngateway: bad-input-gw\nport: '7301:8000'\ncommands: ['python -m http.server 8000']\n"
GATEWAY = "type: gateway\nname: bad-gw\nbackend: local\nregion: local\n"


def _huge(env_entries: int, value: str = "x" * 100) -> str:
    return "type: service\nname: big\nport: 8000\nenv:\n" + "".join(
        f"  VAR_{index}: {value}\n" for index in range(env_entries)
    )


def _alias_bomb() -> str:
    text = "type: service\nport: 8000\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, previous in zip("bcdef", "abcde", strict=True):
        text += f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]\n"
    return text


# (id, file name, content, exit code, what the line says)
CASES: list[tuple[str, str, str | bytes, int, str]] = [
    # The issue's own.
    ("replicas-negative", "s.dstack.yml", SERVICE + "replicas: -1\n", 1, "`replicas`: -1 is not a replica count"),
    ("huge-5mb", "s.dstack.yml", _huge(46_000), 2, "the file is 5 MiB: a configuration is at most 1 MiB"),
    ("binary", "s.dstack.yml", bytes(range(256)) * 40, 2, "not a text file (it holds binary data)"),
    ("duplicate-key", "s.dstack.yml", "type: service\nport: 8000\nport: 9000\n", 2, ":3: `port` is given twice (first on line 2)"),
    ("https-maybe", "s.dstack.yml", SERVICE + "https: maybe\n", 1, "`https`: use true, false or auto, not 'maybe'"),
    ("rps-negative", "s.dstack.yml", SERVICE + "rate_limits: [{rps: -5}]\n", 1, "`rate_limits[0].rps`: use at least 1/60 (one request a minute), not -5"),
    ("secret-typo", "s.dstack.yml", SERVICE.replace("gateway: bad-input-gw", "gateway: ${{ secret.GATEWAY_IP }}"), 1, "did you mean ${{ secrets.GATEWAY_IP }}?"),
    # The file itself.
    ("latin-1", "s.dstack.yml", "type: service\nname: caf\xe9\n".encode("latin-1"), 2, ":2: not UTF-8 text (byte 0xe9)"),
    ("empty", "s.dstack.yml", "", 2, "the file is empty"),
    ("a-list", "s.dstack.yml", "- type: service\n", 2, "expected a configuration"),
    ("type-job", "s.dstack.yml", "type: job\n", 2, "`type` must be gateway or service, not 'job'"),
    ("no-type", "s.dstack.yml", "port: 8000\n", 2, "`type` must be gateway or service, not missing"),
    ("wrong-suffix", "service.yml", SERVICE, 2, "the file name must end with .dstack.yml"),
    ("bad-yaml", "s.dstack.yml", "type: service\nport: [1,\n", 2, "invalid YAML"),
    ("tab-indent", "s.dstack.yml", "type: service\n\tport: 1\n", 2, "invalid YAML"),
    ("alias-bomb", "s.dstack.yml", _alias_bomb(), 2, "expands to more than 100,000 values"),
    ("env-not-in-shell", "s.dstack.yml", SERVICE + "env:\n  - NOT_SET_IN_THIS_SHELL\n", 2, "NOT_SET_IN_THIS_SHELL is not set in this shell"),
    # The configuration's size, at each layer past the CLI's.
    ("config-300k", "s.dstack.yml", SERVICE.replace("python -m http.server 8000", "echo " + "x" * 300_000), 1, "the configuration is 293 KiB: at most 256 KiB"),
    ("env-200k", "s.dstack.yml", SERVICE + "env:\n" + "".join(f"  V{index}: {'x' * 1000}\n" for index in range(200)), 1, "a replica's environment is at most 128 KiB"),
    # env.
    ("env-bad-name", "s.dstack.yml", SERVICE + "env: ['1A=x']\n", 1, "'1A' is not a variable name"),
    ("env-twice", "s.dstack.yml", SERVICE + "env: [A=1, A=2]\n", 1, "`env`: A is set twice"),
    ("env-nested", "s.dstack.yml", SERVICE + "env: {A: {b: 1}}\n", 1, "`env`: A must be text, not a mapping"),
    ("env-string", "s.dstack.yml", SERVICE + "env: A=1\n", 1, "`env`: use a mapping (KEY: VALUE) or a list (- KEY=VALUE)"),
    # Secrets.
    ("unknown-secret", "s.dstack.yml", SERVICE + "env: {K: '${{ secrets.NO_SUCH_SECRET }}'}\n", 1, "unknown secret NO_SUCH_SECRET"),
    ("unclosed-secret", "s.dstack.yml", SERVICE + "env: {K: '${{ secrets.K }'}\n", 1, "`env.K`: '${{ secrets.K }' is not closed"),
    ("env-interpolation", "s.dstack.yml", SERVICE + "env: {K: '${{ env.HOME }}'}\n", 1, "only ${{ secrets.NAME }} is resolved"),
    # Ports.
    ("port-missing", "s.dstack.yml", "type: service\nname: p\n", 1, "`port` is required"),
    ("port-three", "s.dstack.yml", SERVICE.replace("'7301:8000'", "'80:80:80'"), 1, "is not a port"),
    ("port-range", "s.dstack.yml", SERVICE.replace("'7301:8000'", "70000"), 1, "port 70000 is out of range"),
    ("port-list", "s.dstack.yml", SERVICE.replace("'7301:8000'", "[8000]"), 1, '`port`: use 8000 or "<gateway-port>:<app-port>"'),
    ("port-taken", "s.dstack.yml", SERVICE.replace("bad-svc", "bad-svc-2").replace("7301", "7399"), 1, "7399"),
    # Replicas and scaling.
    ("replicas-zero", "s.dstack.yml", SERVICE + "replicas: 0\n", 1, "`replicas: 0` runs no replica"),
    ("replicas-reversed", "s.dstack.yml", SERVICE + "replicas: 3..1\n", 1, "the minimum is above the maximum"),
    ("replicas-too-many", "s.dstack.yml", SERVICE + "replicas: 101\n", 1, "at most 100"),
    ("replicas-bool", "s.dstack.yml", SERVICE + "replicas: true\n", 1, "`replicas`: use a number (2) or a range (1..4), not true"),
    ("range-without-scaling", "s.dstack.yml", SERVICE + "replicas: 1..3\n", 1, "add `scaling`"),
    ("scaling-without-range", "s.dstack.yml", SERVICE + "scaling: {metric: rps, target: 10}\n", 1, "`scaling` needs a replica range"),
    ("scaling-cpu", "s.dstack.yml", SERVICE + "replicas: 1..3\nscaling: {metric: cpu, target: 0}\n", 1, "`scaling.metric`: use rps or concurrency, not 'cpu'"),
    ("scaling-window", "s.dstack.yml", SERVICE + "replicas: 1..3\nscaling: {metric: rps, target: 1, window: 45s}\n", 1, "use 30s, 60s or 300s"),
    # Rate limits.
    ("key-cookie", "s.dstack.yml", SERVICE + "rate_limits: [{rps: 1, key: cookie}]\n", 1, "use ip_address or {type: header, header: NAME}, not 'cookie'"),
    ("key-header-unnamed", "s.dstack.yml", SERVICE + "rate_limits: [{rps: 1, key: {type: header}}]\n", 1, "needs the header's name"),
    ("prefix-no-slash", "s.dstack.yml", SERVICE + "rate_limits: [{prefix: api, rps: 1}]\n", 1, "must start with /"),
    ("prefix-twice", "s.dstack.yml", SERVICE + "rate_limits: [{prefix: /a, rps: 1}, {prefix: /a, rps: 2}]\n", 1, "appears more than once"),
    # Probes (dstack's fields, and Gatehouse's expected_status and unready_after).
    ("probe-mapping", "s.dstack.yml", SERVICE + "probes: {type: http}\n", 1, "`probes`: use a list of probes (- type: http, url: /health), not a mapping"),
    ("probe-tcp", "s.dstack.yml", SERVICE + "probes: [{type: tcp}]\n", 1, "`probes[0].type`: use type: http, not 'tcp'"),
    ("probe-url-relative", "s.dstack.yml", SERVICE + "probes: [{type: http, url: health}]\n", 1, "`probes[0].url`: 'health' must start with /"),
    ("probe-method", "s.dstack.yml", SERVICE + "probes: [{type: http, method: fetch}]\n", 1, "`probes[0].method`: use one of get, post, put, delete, patch, head, not 'fetch'"),
    ("probe-get-body", "s.dstack.yml", SERVICE + "probes: [{type: http, body: ping}]\n", 1, "a get probe sends no body: use method: post"),
    ("probe-interval-zero", "s.dstack.yml", SERVICE + "probes: [{type: http, interval: 0s}]\n", 1, "`probes[0].interval`: '0s' is under a second: use 1s or more"),
    ("probe-timeout-word", "s.dstack.yml", SERVICE + "probes: [{type: http, timeout: fast}]\n", 1, "`probes[0].timeout`: 'fast' is not a duration"),
    ("probe-ready-after-zero", "s.dstack.yml", SERVICE + "probes: [{type: http, ready_after: 0}]\n", 1, "`probes[0].ready_after`: use 1 to 100 probes in a row, not 0"),
    ("probe-status-700", "s.dstack.yml", SERVICE + "probes: [{type: http, expected_status: 700}]\n", 1, "`probes[0].expected_status`: use HTTP statuses (200 or [200, 204]), not 700"),
    ("probe-header-injection", "s.dstack.yml", SERVICE + 'probes: [{type: http, headers: [{name: X-A, value: "a\\r\\nHost: evil"}]}]\n', 1, "`probes[0].headers[0].value`: a header value is 1 to 2048 printable characters, on one line"),
    ("probe-header-name", "s.dstack.yml", SERVICE + "probes: [{type: http, headers: [{name: X A, value: a}]}]\n", 1, "'X A' is not a header name"),
    ("canary-percent", "s.dstack.yml", SERVICE + "canary: {weight: 100}\n", 1, "`canary.weight`: use a whole percent from 1 to 99, not 100"),
    ("canary-number", "s.dstack.yml", SERVICE + "canary: 10\n", 1, "`canary`: use {weight: 10} (percent of requests), or {weight: 10, header: X-Canary}, not 10"),
    ("canary-header", "s.dstack.yml", SERVICE + "canary: {weight: 5, header: X Canary}\n", 1, "`canary.header`: 'X Canary' is not a header name"),
    ("rollout-frozen", "s.dstack.yml", SERVICE + "rollout: {max_surge: 0, max_unavailable: 0}\n", 1, "`rollout`: max_surge and max_unavailable cannot both be 0: the rollout could not start"),
    ("rollout-percent", "s.dstack.yml", SERVICE + "rollout: {max_surge: 25%}\n", 1, "`rollout.max_surge`: use a number of replicas from 0 to 100, not '25%'"),
    ("probe-misspelt", "s.dstack.yml", SERVICE + "probes: [{type: http, urll: /a}]\n", 1, "unknown field `probes[0].urll` (did you mean `url`?)"),
    ("scope-regional", "s.dstack.yml", SERVICE + "rate_limits: [{rps: 1, scope: regional}]\n", 1, "use local or global, not 'regional'"),
    ("rps-text", "s.dstack.yml", SERVICE + "rate_limits: [{rps: fast}]\n", 1, "use a number of requests per second"),
    # Other service fields.
    ("auth-words", "s.dstack.yml", SERVICE + "auth: yes please\n", 1, "`auth`: use true or false, not 'yes please'"),
    ("commands-string", "s.dstack.yml", SERVICE.replace("commands: ['python -m http.server 8000']", "commands: python -m http.server"), 1, "use a list of shell commands"),
    ("name-uppercase", "s.dstack.yml", SERVICE.replace("bad-svc", "Bad_Svc"), 1, "'Bad_Svc' is not a valid name"),
    ("field-typo", "s.dstack.yml", SERVICE + "replcias: 2\n", 1, "unknown field `replcias` (did you mean `replicas`?)"),
    ("gateway-number", "s.dstack.yml", SERVICE.replace("gateway: bad-input-gw", "gateway: 5"), 1, "`gateway`: use a gateway name"),
    ("gateway-unknown", "s.dstack.yml", SERVICE.replace("gateway: bad-input-gw", "gateway: no-such-gw"), 1, "no-such-gw"),
    ("model-list", "s.dstack.yml", SERVICE + "model: [a]\n", 1, "`model`: use text, not a list"),
    # Gateways.
    ("backend-mars", "g.dstack.yml", GATEWAY.replace("backend: local", "backend: mars"), 1, "'mars' is not a backend"),
    ("region-missing", "g.dstack.yml", "type: gateway\nname: bad-gw\nbackend: local\n", 1, "`region` is required"),
    ("domain-bad", "g.dstack.yml", GATEWAY + "domain: not a domain\n", 1, "is not a DNS name"),
    ("certificate-selfsigned", "g.dstack.yml", GATEWAY + "certificate: {type: selfsigned}\n", 1, "not type 'selfsigned'"),
    ("certificate-acm-local", "g.dstack.yml", GATEWAY + "certificate: {type: acm, arn: 'arn:aws:acm:x'}\n", 1, "`certificate: acm` works on the aws backend only"),
    ("private-lets-encrypt", "g.dstack.yml", GATEWAY + "public_ip: false\n", 1, "lets-encrypt certificates need a public IP"),
    ("gateway-replicas-zero", "g.dstack.yml", GATEWAY + "replicas: 0\n", 1, "`replicas`: use 1 or more, not 0"),
    ("tag-bad", "g.dstack.yml", GATEWAY + "tags: {'1bad': x}\n", 1, "tag key '1bad' is not valid"),
    ("address-bad", "g.dstack.yml", GATEWAY + "address: nope\n", 1, "'nope' is not an IP address"),
    ("networks-bad", "g.dstack.yml", GATEWAY + "replica_networks: [x]\n", 1, "'x' is not a network"),
    ("router", "g.dstack.yml", GATEWAY + "router: {type: sglang}\n", 1, "move `router` to the service"),
    ("instance-type-local", "g.dstack.yml", GATEWAY + "instance_type: t3.large\n", 1, "the local backend has no instance types"),
    ("name-too-long", "g.dstack.yml", GATEWAY.replace("bad-gw", "g" * 50), 1, "is not a valid name"),
    ("default-words", "g.dstack.yml", GATEWAY + "default: sure\n", 1, "`default`: use true or false, not 'sure'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def baseline(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], tuple[str, ...]]:
    """A gateway and a service that bad configurations must leave as they are; a function giving
    what the list commands show."""
    workdir = tmp_path_factory.mktemp("baseline")
    gateway = workdir / "gw.dstack.yml"
    gateway.write_text("type: gateway\nname: bad-input-gw\nbackend: local\nregion: local\n")
    assert server.cli("apply", "-f", str(gateway), "-y").code == 0
    taken = workdir / "taken.dstack.yml"
    taken.write_text("type: service\nname: holder\ngateway: bad-input-gw\nport: '7399:8000'\n")
    assert server.cli("apply", "-f", str(taken), "-y", "-d").code == 0

    def listed() -> tuple[str, ...]:
        gateways = json.loads(server.cli("gateway", "list", "--json").stdout).get("gateways", [])
        services = json.loads(server.cli("service", "list", "--json").stdout).get("services", [])
        return (
            *sorted(f"gateway {gateway['name']}" for gateway in gateways),
            *sorted(f"service {service['name']} {service['resource_version']}" for service in services),
        )

    return listed


def test_there_are_at_least_forty() -> None:
    assert len(CASES) >= 40 and len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("name", "content", "code", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_a_bad_configuration_gives_one_line_and_creates_nothing(
    server: ServerProcess,
    baseline: Callable[[], tuple[str, ...]],
    tmp_path: Path,
    name: str,
    content: str | bytes,
    code: int,
    expected: str,
) -> None:
    before = baseline()
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = server.cli("apply", "-f", str(path), "-y")
    output = (result.stdout + result.stderr).strip().splitlines()
    assert len(output) == 1 and output[0].startswith("error: "), result.stdout + result.stderr
    assert result.stdout == ""
    assert result.code == code, output[0]
    assert expected in output[0], output[0]
    assert not any(internal in output[0] for internal in INTERNALS), output[0]
    assert baseline() == before


def test_a_secret_that_outgrows_a_replicas_environment_fails_the_service_with_the_reason(
    server: ServerProcess, baseline: Callable[[], tuple[str, ...]], tmp_path: Path
) -> None:
    """Checked when applied, and again whenever the runner starts a replica: a secret may grow."""
    for name in ("BIG_A", "BIG_B", "BIG_C"):
        assert server.cli("secrets", "add", name, "x" * 40_000).code == 0
    config = tmp_path / "grows.dstack.yml"
    config.write_text(
        "type: service\nname: grows\ngateway: bad-input-gw\nport: '7302:8000'\n"
        "env:\n  - A=${{ secrets.BIG_A }}\n  - B=${{ secrets.BIG_B }}\n  - C=${{ secrets.BIG_C }}\n"
        "commands: ['exit 3']\n"
    )
    applied = server.cli("apply", "-f", str(config), "-y", "-d")
    assert applied.code == 0, applied.stderr
    assert server.cli("secrets", "add", "BIG_C", "x" * 60_000).code == 0
    expected = "with its secrets resolved: a replica's environment is at most 128 KiB"
    deadline = time.monotonic() + 60
    shown = ""
    while expected not in shown and time.monotonic() < deadline:
        time.sleep(0.5)
        shown = json.loads(server.cli("service", "get", "grows", "--json").stdout)["status"].get(
            "message", ""
        )
    assert expected in shown
    assert server.cli("service", "delete", "grows", "-y").code == 0
    for name in ("BIG_A", "BIG_B", "BIG_C"):
        assert server.cli("secrets", "delete", name, "-y").code == 0
