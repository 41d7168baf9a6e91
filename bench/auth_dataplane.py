"""Benchmark: what the auth check costs the data plane, side by side in one run.

Three Envoys (--concurrency 1, one at a time, in alternating order each round) serve the same
service, translated by gateway_xds, with a valid bearer token on every request (wrk -t1):

* `lua`: auth as now, in Envoy (translate/host_auth.py: SHA-256 in Lua, the table of the service's
  credentials in its virtual host, here `--credentials` of them);
* `ext_authz`: auth as before, a gRPC ext_authz call per request to a check in Python answering from
  memory (hash, dictionary look-up, the principal set and the credential removed), running here;
* `none`: the same service without auth, the floor.

The upstream is an nginx answering 200 "ok". Medians of requests/s are printed with the machine's
cores (wrk, Envoy and the ext_authz server share them).

    .venv/bin/python -m bench.auth_dataplane [--rounds 3] [--seconds 5] [--connections 32]
        [--credentials 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import secrets
import statistics
import tempfile
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf.json_format import MessageToDict
from google.rpc import code_pb2, status_pb2

from bench.xds_dataplane import wrk
from bench.xds_harness import HttpProbe, ensure_debian_package, machine, static_upstream
from gatehouse.envoy_bootstrap import BootstrapParams
from gateway_xds.authz.credentials import PRINCIPAL_HEADER
from gateway_xds.ir.backends import Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.policies import Authorization, OpeningCredential
from gateway_xds.testing.builders import DOMAIN, domain_gateway, service_name
from gateway_xds.testing.envoy import EnvoyProcess, envoy_binary, free_port
from gateway_xds.testing.static import static_bootstrap
from gateway_xds.translate.config_source import control_plane_service
from gateway_xds.translate.host_auth import AUTH_CHECK_FILTER

KINDS = ("lua", "ext_authz", "none")
EXT_AUTHZ_CLUSTER = "bench_ext_authz"


class TableCheck(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]  # xds-protos is untyped
    """The check as gateway_xds answered it before: sha256 of the bearer value looked up in memory."""

    def __init__(self, table: dict[str, str]) -> None:
        self._table = table

    async def Check(
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[external_auth_pb2.CheckRequest, external_auth_pb2.CheckResponse],
    ) -> external_auth_pb2.CheckResponse:
        scheme, _, value = request.attributes.request.http.headers.get("authorization", "").partition(" ")
        principal = self._table.get(hashlib.sha256(value.strip().encode()).hexdigest())
        if scheme.lower() != "bearer" or principal is None:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
                denied_response=external_auth_pb2.DeniedHttpResponse(
                    status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized)
                ),
            )
        header = base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=PRINCIPAL_HEADER, value=principal),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[header], headers_to_remove=["authorization"]
            ),
        )


def gateway(credentials: tuple[OpeningCredential, ...], upstream_port: int, port: int) -> GatewayIR:
    """One service; with `credentials`, it needs one of them."""
    ir = domain_gateway(1, endpoints=(Endpoint("127.0.0.1", upstream_port),), port=port)
    (listener,) = ir.listeners
    (vhost,) = listener.virtual_hosts
    if credentials:
        vhost = dataclasses.replace(vhost, authorization=Authorization("main", "svc-1", credentials))
    return dataclasses.replace(ir, listeners=(dataclasses.replace(listener, virtual_hosts=(vhost,)),))


def with_ext_authz(bootstrap: dict[str, Any], check_port: int) -> dict[str, Any]:
    """The open service's bootstrap with the check of before: an ext_authz filter after CORS asking the
    check server (HTTP/2) on every request, with nothing but the credential sent."""
    check = ext_authz_pb2.ExtAuthz(
        grpc_service=control_plane_service(EXT_AUTHZ_CLUSTER, 1000),
        transport_api_version=config_source_pb2.V3,
        failure_mode_allow=False,
    )
    check.allowed_headers.patterns.add(exact="authorization")
    config = MessageToDict(check, preserving_proto_field_name=True)
    config["@type"] = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
    for listener in bootstrap["static_resources"]["listeners"]:
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        filters = [f for f in manager["http_filters"] if f["name"] != AUTH_CHECK_FILTER]
        filters.insert(2, {"name": "envoy.filters.http.ext_authz", "typed_config": config})
        manager["http_filters"] = filters
    bootstrap["static_resources"]["clusters"].append(
        {
            "name": EXT_AUTHZ_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {
                "cluster_name": EXT_AUTHZ_CLUSTER,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": "127.0.0.1", "port_value": check_port}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
    return bootstrap


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--credentials", type=int, default=1000)
    args = parser.parse_args()
    wrk_binary = ensure_debian_package("wrk", "wrk")
    binary = envoy_binary()
    if binary is None:
        raise SystemExit("error: no envoy binary")
    print(f"auth data-plane benchmark on {machine()}; os.cpu_count()={os.cpu_count()}")
    print(
        f"one service, {args.credentials} credentials open it; wrk -t1 -c{args.connections} "
        f"-d{args.seconds}s with a valid token; Envoy --concurrency 1; nginx upstream (1 worker)"
    )
    token = "gh_" + secrets.token_urlsafe(32)
    table = {
        hashlib.sha256(f"other-{i}".encode()).hexdigest(): f"user:u{i}" for i in range(args.credentials - 1)
    }
    table[hashlib.sha256(token.encode()).hexdigest()] = "user:bench"
    credentials = tuple(OpeningCredential(digest, principal) for digest, principal in sorted(table.items()))
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(TableCheck(table), server)
    check_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    rates: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="gatehouse-auth-dataplane-") as workdir:
        work = Path(workdir)
        upstream_port = free_port()
        upstream = static_upstream(work / "upstream", upstream_port)
        upstream.start()
        listen_port = free_port()
        host = f"{service_name(0)}.{DOMAIN}"
        empty = work / "empty.yaml"
        empty.write_text("")
        try:
            for round_index in range(args.rounds):
                # Rotate the order so that a drift in the machine's load favours none.
                order = KINDS[round_index % 3 :] + KINDS[: round_index % 3]
                for kind in order:
                    params = BootstrapParams("gw-1", 0, "127.0.0.1", free_port(), admin_port=free_port())
                    ir = gateway(credentials if kind == "lua" else (), upstream_port, listen_port)
                    bootstrap = static_bootstrap(ir, params, empty)
                    if kind == "ext_authz":
                        bootstrap = with_ext_authz(bootstrap, check_port)
                    envoy = EnvoyProcess(binary, work / f"envoy-{kind}-{round_index}", bootstrap)
                    envoy.start()
                    try:
                        await asyncio.to_thread(envoy.wait_ready)
                        probe = HttpProbe(listen_port)
                        await asyncio.to_thread(probe.wait_for, host, 200 if kind == "none" else 401, 60.0)
                        probe.close()
                        await asyncio.sleep(1.0)  # let the last Envoy's sockets go
                        rate = await asyncio.to_thread(
                            wrk,
                            wrk_binary,
                            listen_port,
                            host,
                            args.seconds,
                            args.connections,
                            (f"Authorization: Bearer {token}",),
                        )
                    finally:
                        envoy.stop()
                    rates[kind].append(rate)
                    print(f"  round {round_index + 1} {kind:9}: {rate:9.0f} requests/s", flush=True)
        finally:
            await server.stop(1.0)
            upstream.stop()
    lua, ext_authz, none = (statistics.median(rates[kind]) for kind in KINDS)
    print(
        f"\n  median requests/s ({os.cpu_count()} cores): lua {lua:.0f}, ext_authz {ext_authz:.0f}, "
        f"none {none:.0f}\n  lua / ext_authz {lua / ext_authz:.2f}x; lua / none {lua / none:.2f}; "
        f"ext_authz / none {ext_authz / none:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
