"""A service rollout's states, as the runner writes them in `status.rollout.state` and `apply` reads them."""

PROGRESSING = "progressing"
COMPLETE = "complete"
# Rolled back: the new version never got ready, the old one served throughout.
FAILED = "failed"
