"""A bounded request loop on loopback: a few threads with keep-alive connections, every answer
counted (and, if asked, sorted into kinds). Used to check that configuration changes never fail a
request."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # What `classify` made of each answer.
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    @property
    def failures(self) -> int:
        """Connection errors and answers other than 2xx."""
        bad = sum(n for status, n in self.statuses.items() if not 200 <= status < 300)
        return bad + sum(self.errors.values())

    def summary(self) -> str:
        return f"{self.total} requests, statuses {dict(self.statuses)}, errors {dict(self.errors)}"


# An answer's status, headers (lower-case names) and body -> its kind.
Classify = Callable[[int, Mapping[str, str], bytes], str]


class LoadLoop:
    """GET `path` with `Host: host` (and `headers`) on `address`:`port` from `connections` threads
    until stopped, or `max_seconds` at the latest (the loop is always bounded)."""

    def __init__(
        self,
        port: int,
        host: str = "localhost",
        path: str = "/",
        connections: int = 4,
        max_seconds: float = 120.0,
        pause: float = 0.0,
        headers: Mapping[str, str] | None = None,
        classify: Classify | None = None,
        address: str = "127.0.0.1",
    ) -> None:
        self._address, self._port, self._path = address, port, path
        self._headers = {**(headers or {}), "Host": host}
        self._classify = classify
        self._max_seconds = max_seconds
        self._pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.result = LoadResult()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(connections)]

    def start(self) -> LoadLoop:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.result

    def wait_for(self, requests: int, within: float = 30.0) -> None:
        """Until at least `requests` answers were counted in all."""
        deadline = time.monotonic() + within
        while self.result.total < requests and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if connection is None:
                connection = http.client.HTTPConnection(self._address, self._port, timeout=10)
            try:
                connection.request("GET", self._path, headers=self._headers)
                response = connection.getresponse()
                body = response.read()
                kind = None
                if self._classify is not None:
                    headers = {name.lower(): value for name, value in response.getheaders()}
                    kind = self._classify(response.status, headers, body)
                with self._lock:
                    self.result.statuses[response.status] += 1
                    if kind is not None:
                        self.result.kinds[kind] += 1
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as error:
                with self._lock:
                    self.result.errors[type(error).__name__] += 1
                if connection is not None:
                    connection.close()
                connection = None
            if self._pause:
                time.sleep(self._pause)
        if connection is not None:
            connection.close()
