"""Rates across gateway replicas and the scaling decision, on made-up clocks."""

from __future__ import annotations

import pytest

from gateway_xds.autoscale.decision import ScalingPolicy, ScalingState, decide, wake, wanted
from gateway_xds.autoscale.rates import RequestRates

POLICY = ScalingPolicy(minimum=1, maximum=3, target=10, scale_up_delay=20, scale_down_delay=60)


def test_rates_sum_gateway_replicas_and_survive_one_missing_report() -> None:
    rates = RequestRates()
    for second in range(0, 31, 5):
        rates.record("gw/0", "svc", second, second * 4.0)
        rates.record("gw/1", "svc", second, second * 6.0)
    assert rates.rate("svc", 30, 30) == pytest.approx(10.0)
    # gw/1 misses its next reports: its last rate still counts within the window.
    for second in range(35, 46, 5):
        rates.record("gw/0", "svc", second, second * 4.0)
    assert rates.rate("svc", 45, 30) == pytest.approx(10.0)
    assert rates.rate("svc", 100, 30) == 0.0


def test_a_restarted_envoy_does_not_count_as_negative_traffic() -> None:
    rates = RequestRates()
    rates.record("gw/0", "svc", 0, 1000)
    rates.record("gw/0", "svc", 10, 1100)
    rates.record("gw/0", "svc", 20, 5)
    rates.record("gw/0", "svc", 30, 105)
    assert rates.rate("svc", 30, 30) == pytest.approx(10.0)


@pytest.mark.parametrize(("rps", "expected"), [(0, 1), (5, 1), (10, 1), (10.1, 2), (25, 3), (1000, 3)])
def test_wanted_is_ceil_of_rps_over_target_clamped(rps: float, expected: int) -> None:
    assert wanted(POLICY, rps) == expected


def test_delays_up_and_down() -> None:
    state = ScalingState(current=1)
    assert decide(POLICY, state, rps=25, now=0) == 1
    assert decide(POLICY, state, rps=25, now=19) == 1
    assert decide(POLICY, state, rps=25, now=20) == 3
    assert decide(POLICY, state, rps=5, now=30) == 3
    assert decide(POLICY, state, rps=15, now=50) == 3  # still wanting fewer (2), timer keeps running
    assert decide(POLICY, state, rps=5, now=89) == 3
    assert decide(POLICY, state, rps=5, now=90) == 1


def test_a_blip_resets_the_timer() -> None:
    state = ScalingState(current=1)
    decide(POLICY, state, rps=25, now=0)
    decide(POLICY, state, rps=5, now=10)
    assert decide(POLICY, state, rps=25, now=25) == 1
    assert decide(POLICY, state, rps=25, now=45) == 3


def test_requests_to_a_service_at_zero_bring_one_up_at_once() -> None:
    policy = ScalingPolicy(minimum=0, maximum=4, target=10, scale_up_delay=300, scale_down_delay=300)
    state = ScalingState(current=0)
    assert decide(policy, state, rps=0, now=0) == 0
    assert decide(policy, state, rps=0.5, now=1) == 1


def test_a_service_woken_by_waiting_requests_stays_up_for_a_window() -> None:
    policy = ScalingPolicy(minimum=0, maximum=4, target=10, scale_up_delay=300, scale_down_delay=5)
    state = ScalingState(current=0)
    assert wake(state, now=100, window=30) == 1
    # The stats do not show the held requests yet: no scaling down until the window has seen them.
    assert decide(policy, state, rps=0, now=101) == 1
    assert decide(policy, state, rps=0, now=129) == 1
    assert decide(policy, state, rps=0, now=130) == 1  # the scale-down delay starts now
    assert decide(policy, state, rps=0, now=135) == 0
