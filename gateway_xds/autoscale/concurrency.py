"""Requests in flight per service from Envoys' `upstream_rq_active` gauges, combined across a
gateway's Envoys: each Envoy's samples averaged over the window, then summed. An Envoy that stops
reporting drops out once its last sample leaves the window."""

from __future__ import annotations

from collections import deque

from gateway_xds.autoscale.rates import KEEP_SECONDS


class InFlight:
    def __init__(self) -> None:
        # (service key, Envoy node id) -> its samples (time, requests in flight)
        self._samples: dict[tuple[str, str], deque[tuple[float, float]]] = {}

    def record(self, node: str, service: str, now: float, active: float) -> None:
        samples = self._samples.setdefault((service, node), deque())
        samples.append((now, active))
        while samples and now - samples[0][0] > KEEP_SECONDS:
            samples.popleft()

    def level(self, service: str, now: float, window: int) -> float:
        """Requests in flight to `service`, averaged over `window`, summed over the gateway's Envoys."""
        total = 0.0
        for (key, _), samples in self._samples.items():
            if key != service:
                continue
            inside = [value for when, value in samples if now - when <= window]
            if inside:
                total += sum(inside) / len(inside)
        return total
