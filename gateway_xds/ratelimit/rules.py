"""The rule a shared limit's descriptors carry (translate/rate_limits.py writes it: service and prefix,
rate, burst)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway_xds.translate.rate_limits import BURST_KEY, RPS_KEY, RULE_KEY


@dataclass(frozen=True)
class Rule:
    name: str
    requests_per_second: float
    burst: int


def read_rule(entries: Mapping[str, str]) -> Rule | None:
    """None when the entries name no rule of ours, or one that limits nothing."""
    try:
        rule = Rule(entries[RULE_KEY], float(entries[RPS_KEY]), int(entries[BURST_KEY]))
    except (KeyError, ValueError):
        return None
    return rule if rule.requests_per_second > 0 else None
