"""An Envoy bootstrap with a gateway's translated resources given statically, instead of over ADS: for
benchmarks and tests that need Envoy to run what gateway_xds translates, without a control plane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from gatehouse.envoy_bootstrap import BootstrapParams, render_bootstrap
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE
from gateway_xds.translate.translator import translate


def _json(message: Any) -> dict[str, Any]:
    return dict(json.loads(json.dumps(MessageToDict(message, preserving_proto_field_name=True))))


def static_bootstrap(ir: GatewayIR, params: BootstrapParams, empty_file: Path) -> dict[str, Any]:
    """The provisioner's bootstrap (the same node, stats sink and overload manager) with the resources
    gateway_xds would serve for `ir` as static resources instead of ADS."""
    resources = translate(ir)
    listeners = []
    for name, listener in sorted(resources[LISTENER].items()):
        rendered = _json(listener)
        manager = rendered["filter_chains"][0]["filters"][0]["typed_config"]
        if "scoped_routes" in manager:
            scopes = [_json(s) for _, s in sorted(resources[SCOPED_ROUTE].items())]
            manager["scoped_routes"].pop("scoped_rds")
            manager["scoped_routes"]["scoped_route_configurations_list"] = {
                "scoped_route_configurations": scopes
            }
            # Required by the schema but never used: every scope has its routes inline.
            manager["scoped_routes"]["rds_config_source"] = {
                "path_config_source": {"path": str(empty_file)},
                "resource_api_version": "V3",
            }
        else:
            manager.pop("rds")
            manager["route_config"] = _json(resources[ROUTE][name])
        listeners.append(rendered)
    clusters = []
    for name, cluster in sorted(resources[CLUSTER].items()):
        rendered = _json(cluster)
        rendered["type"] = "STATIC"
        rendered.pop("eds_cluster_config")
        rendered["load_assignment"] = _json(resources[ENDPOINT][name])
        clusters.append(rendered)
    bootstrap = render_bootstrap(params)
    del bootstrap["dynamic_resources"]
    bootstrap["static_resources"]["listeners"] = listeners
    bootstrap["static_resources"]["clusters"] += clusters
    return bootstrap
