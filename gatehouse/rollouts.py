"""A service rollout's states, as the runner writes them in `status.rollout.state` (and the registry,
for `service promote|abort`), and `apply` and gateway_xds read them."""

PROGRESSING = "progressing"
# Every new replica is ready and takes the canary's share; the old ones serve the rest.
CANARY = "canary"
# Decided with `service promote|abort`: the runner stops the old, or the new, replicas.
PROMOTING = "promoting"
ABORTING = "aborting"
COMPLETE = "complete"
# Rolled back (the new version never got ready) or aborted: the old version serves.
FAILED = "failed"

# Which of two records of one generation's rollout is further on.
_ORDER = {PROGRESSING: 0, CANARY: 1, PROMOTING: 2, ABORTING: 2, COMPLETE: 3, FAILED: 3}


def later(first: tuple[int, str], second: tuple[int, str]) -> bool:
    """Whether rollout `first` (generation, state) is further on than `second`."""
    return (first[0], _ORDER.get(first[1], -1)) > (second[0], _ORDER.get(second[1], -1))


def canary_weight(state: str, weight: int) -> int | None:
    """The share of requests the new version gets in `state`; None: no split (one backend)."""
    if state in (PROGRESSING, CANARY):
        return weight
    if state == PROMOTING:
        return 100
    if state == ABORTING:
        return 0
    return None
