"""How the share of successes an Envoy logs follows its load: all below the budget, about half the
budget's worth above it, all again once load falls; errors are never sampled and leave successes at
least a small room; the configured share is a cap; only Envoys whose runtime stream is open count."""

from __future__ import annotations

import pytest

from gateway_xds.observe.log_sampling import MIN_PERCENT, LogSampling
from gateway_xds.observe.runtime_service import runtime_layer

NODE, OTHER = "gateway/g1/0", "gateway/g2/0"


def _send(sampling: LogSampling, node: str, successes: int, errors: int = 0) -> None:
    for _ in range(successes):
        sampling.received(node, 200)
    for _ in range(errors):
        sampling.received(node, 503)


def _judged(sampling: LogSampling, node: str, successes: int, errors: int = 0) -> float | None:
    _send(sampling, node, successes, errors)
    sampling.judge(1.0)
    return sampling.percent(node)


def test_every_request_below_the_budget_fewer_above_it_and_all_again_when_load_falls() -> None:
    sampling = LogSampling(budget=100)
    sampling.attach(NODE)
    assert _judged(sampling, NODE, 100) == 100
    changed = sampling.changed
    assert _judged(sampling, NODE, 1000) == 5  # 50 of 1,000 offered a second
    assert changed.is_set() and not sampling.changed.is_set()
    assert _judged(sampling, NODE, 500) == 5  # logged under the old share: not judged
    assert _judged(sampling, NODE, 80) == 5  # 1,600 offered, 80 logged: within the band
    assert _judged(sampling, NODE, 20) == 12.5  # 400 offered: under a quarter of the budget
    assert _judged(sampling, NODE, 0) == 12.5  # settling
    assert _judged(sampling, NODE, 0) == 100


def test_errors_are_never_sampled_but_leave_successes_some_room() -> None:
    sampling = LogSampling(budget=100)
    sampling.attach(NODE)
    assert _judged(sampling, NODE, 1000, errors=30) == 2  # 20 of 1,000
    sampling.judge(1.0)
    assert _judged(sampling, NODE, 20, errors=500) == 0.5  # room for 5 of 1,000
    assert sampling.received(NODE, 404) == 0.5


def test_the_configured_share_caps_it_and_a_floor_bounds_it() -> None:
    sampling = LogSampling(budget=10, cap=10)
    sampling.attach(NODE)
    assert sampling.percent(NODE) == 10
    assert _judged(sampling, NODE, 100_000) == MIN_PERCENT
    sampling.judge(1.0)
    assert _judged(sampling, NODE, 0) == 10


def test_only_envoys_with_an_open_runtime_stream_here_count() -> None:
    sampling = LogSampling(budget=10)
    assert sampling.received(OTHER, 200) is None
    sampling.attach(NODE)
    sampling.attach(NODE)
    sampling.detach(NODE)
    assert _judged(sampling, NODE, 1000) == 0.5
    assert sampling.shares() == {NODE: 0.5}
    sampling.detach(NODE)
    assert sampling.percent(NODE) is None and sampling.shares() == {}


@pytest.mark.parametrize(("percent", "numerator"), [(100, 1_000_000), (2.5, 25_000), (0.01, 100)])
def test_the_runtime_layer_holds_the_numerator_over_a_million(percent: float, numerator: int) -> None:
    layer = runtime_layer(percent)
    assert layer.name == "gatehouse"
    assert dict(layer.layer) == {"gatehouse.access_log.success_share": numerator}
