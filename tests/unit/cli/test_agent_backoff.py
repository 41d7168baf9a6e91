"""How long `gatehouse agent` waits before reconnecting: growing and bounded while the server is
away, jittered, and short again once a session registered the replica."""

from __future__ import annotations

import pytest

from cli.agent import RETRY_INITIAL_SECONDS, RETRY_MAX_SECONDS, _Reconnects
from gatehouse.client.backoff import Backoff


def test_delays_grow_to_the_maximum_and_start_over_after_a_reset() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, uniform=lambda: 0.0)
    assert [backoff.next_delay() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_jitter_takes_up_to_half_of_each_delay() -> None:
    draws = iter([0.0, 0.5, 0.75])
    backoff = Backoff(initial=1.0, maximum=1.0, uniform=lambda: next(draws))
    assert [backoff.next_delay() for _ in range(3)] == pytest.approx([1.0, 0.75, 0.625])


def test_a_restarted_server_costs_at_most_the_maximum_and_a_registered_session_resets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reconnects = _Reconnects()
    for _ in range(50):
        reconnects.ended("unavailable")
    assert RETRY_MAX_SECONDS / 2 <= reconnects.ended("unavailable") <= RETRY_MAX_SECONDS
    reconnects.ready()
    assert reconnects.ended("unavailable") <= RETRY_INITIAL_SECONDS
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["The connection to the server ended (unavailable); reconnecting"] * 2  # one per outage
