"""ACME HTTP-01 challenges on the watch feed, by the gateway and host whose Envoy answers them."""

from __future__ import annotations

from collections.abc import Iterable

from gatehouse.client.mirror import RegistryMirror
from gateway_xds.ir.tls import AcmeChallenge

# (gateway id, lower-case hostname)
Host = tuple[str, str]


class ChallengeIndex:
    def __init__(self) -> None:
        self._by_host: dict[Host, dict[str, AcmeChallenge]] = {}
        self._host_of: dict[str, Host] = {}  # token -> where it is answered

    def update(self, mirror: RegistryMirror, tokens: Iterable[str]) -> set[Host]:
        """Follow the given tokens' changes; returns the hosts whose answers changed."""
        changed: set[Host] = set()
        for token in tokens:
            before = self._host_of.pop(token, None)
            if before is not None:
                answers = self._by_host[before]
                answers.pop(token, None)
                if not answers:
                    del self._by_host[before]
                changed.add(before)
            challenge = mirror.challenges.get(token)
            if challenge is not None:
                host = (challenge.gateway_id, challenge.hostname.lower())
                self._host_of[token] = host
                self._by_host.setdefault(host, {})[token] = AcmeChallenge(token, challenge.key_authorization)
                changed.add(host)
        return changed

    def answers(self, gateway_id: str, hostname: str) -> tuple[AcmeChallenge, ...]:
        found = self._by_host.get((gateway_id, hostname.lower()), {})
        return tuple(found[token] for token in sorted(found))

    def clear(self) -> None:
        self._by_host.clear()
        self._host_of.clear()
