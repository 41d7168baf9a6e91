"""Golden tests: testdata/in/<case>.yaml (a GatewayIR) -> testdata/out/<case>.<kind>.yaml."""

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from gateway_xds.cache.snapshot import Snapshot
from gateway_xds.ir.codec import ir_from_dict, ir_to_dict
from gateway_xds.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE, SECRET, Resources
from gateway_xds.translate.translator import translate

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p.stem for p in (TESTDATA / "in").glob("*.yaml"))
KINDS = {
    "listeners": LISTENER,
    "routes": ROUTE,
    "scoped_routes": SCOPED_ROUTE,
    "clusters": CLUSTER,
    "endpoints": ENDPOINT,
    "secrets": SECRET,
}


def load_case(case: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((TESTDATA / "in" / f"{case}.yaml").read_text())
    return loaded


def render(resources: Resources, type_url: str) -> str:
    by_name = resources[type_url]
    dicts = [MessageToDict(by_name[name], preserving_proto_field_name=True) for name in sorted(by_name)]
    # Any fields come back as OrderedDicts, which safe_dump refuses.
    dicts = json.loads(json.dumps(dicts))
    return yaml.safe_dump(dicts, sort_keys=True, default_flow_style=False)


def test_cases_exist() -> None:
    expected = {"empty", "port_mapped", "zero_endpoints", "domains", "per_host", "https", "policies"}
    expected |= {"agent_tunnels", "agent_tunnels_https", "canary"}
    assert expected <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_golden: bool) -> None:
    ir = ir_from_dict(load_case(case))
    assert ir.validate() == []
    resources = translate(ir)
    for kind, type_url in KINDS.items():
        golden = TESTDATA / "out" / f"{case}.{kind}.yaml"
        actual = render(resources, type_url)
        if update_golden:
            golden.write_text(actual)
        assert golden.exists(), f"missing {golden.name}: run pytest tests/unit/gateway_xds --update-golden"
        assert actual == golden.read_text(), f"{golden.name} differs (rerun with --update-golden if intended)"


@pytest.mark.parametrize("case", CASES)
def test_translation_is_consistent_and_deterministic(case: str) -> None:
    ir = ir_from_dict(load_case(case))
    first, second = Snapshot(1, translate(ir)), Snapshot(2, translate(ir))
    assert first.consistent() == []
    assert all(first.version(t) == second.version(t) for t in KINDS.values())


@pytest.mark.parametrize("case", CASES)
def test_ir_dict_round_trip(case: str) -> None:
    ir = ir_from_dict(load_case(case))
    assert ir_from_dict(ir_to_dict(ir)) == ir
    assert ir_from_dict(yaml.safe_load(yaml.safe_dump(ir_to_dict(ir)))) == ir
