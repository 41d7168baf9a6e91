"""The access-log sampling of copies of gateway_xds that share Redis (log_sampling.py): per Envoy, two
counters every copy adds what it received to (unless it holds the Envoy's runtime stream) and the
holder takes (GETDEL), and the share the holder publishes. Everything expires a few judgements after
its last write, so an Envoy gone or moved leaves nothing behind. Without Redis answering, each copy
judges what it received itself."""

from __future__ import annotations

from collections.abc import Mapping

from gateway_xds.observe.log_sampling import CONTROL_SECONDS, Counts
from gateway_xds.shared.redis import SharedRedis, SharedStateUnavailable

KEEP_MS = int(CONTROL_SECONDS * 3 * 1000)
WHAT = "access log sampling"


class RedisSampling:
    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared

    def _successes(self, node: str) -> str:
        return self._shared.key("log_successes", node)

    def _errors(self, node: str) -> str:
        return self._shared.key("log_errors", node)

    def _share(self, node: str) -> str:
        return self._shared.key("log_share", node)

    async def exchange(
        self, counts: dict[str, Counts], held: Mapping[str, float]
    ) -> tuple[dict[str, Counts], dict[str, float]]:
        passed = [node for node in counts if node not in held]
        adding = [node for node in passed if counts[node].successes or counts[node].errors]
        pipeline = self._shared.client.pipeline(transaction=False)
        for node in adding:  # 4 answers each
            pipeline.incrby(self._successes(node), counts[node].successes)
            pipeline.incrby(self._errors(node), counts[node].errors)
            pipeline.pexpire(self._successes(node), KEEP_MS)
            pipeline.pexpire(self._errors(node), KEEP_MS)
        for node, percent in held.items():  # 3 answers each
            pipeline.getdel(self._successes(node))
            pipeline.getdel(self._errors(node))
            pipeline.set(self._share(node), repr(percent), px=KEEP_MS)
        if passed:
            pipeline.mget([self._share(node) for node in passed])
        try:
            answers = await self._shared.call(WHAT, pipeline.execute())
        except SharedStateUnavailable:
            return counts, {}
        taken = answers[len(adding) * 4 :]
        judged = {node: counts[node] for node in held if node in counts}
        for index, node in enumerate(held):
            successes, errors = taken[index * 3], taken[index * 3 + 1]
            own = judged.get(node, Counts())
            judged[node] = Counts(own.successes + int(successes or 0), own.errors + int(errors or 0))
        shares = taken[len(held) * 3] if passed else []
        elsewhere = {
            node: float(share) for node, share in zip(passed, shares, strict=True) if share is not None
        }
        return judged, elsewhere
