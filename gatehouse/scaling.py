"""What a service's `scaling.metric` may be, as the registry validates it and gateway_xds scales on it."""

from typing import Literal, get_args

# Requests per second, or requests in flight, per replica.
Metric = Literal["rps", "concurrency"]
METRICS: tuple[str, ...] = get_args(Metric)
