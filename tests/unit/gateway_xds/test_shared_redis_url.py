"""GATEHOUSE_REDIS_URL: unset keeps gateway_xds's shared state in memory; a URL that is not Redis's
stops the process with one line saying how to write it."""

from __future__ import annotations

import pytest

from gateway_xds.shared import redis as shared_redis


def test_unset_or_blank_means_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(shared_redis.REDIS_URL_ENV, raising=False)
    assert shared_redis.from_env() is None
    monkeypatch.setenv(shared_redis.REDIS_URL_ENV, "  ")
    assert shared_redis.from_env() is None


@pytest.mark.parametrize("url", ["http://redis:6379", "redis-host:6379", "postgresql://db/gatehouse"])
def test_a_url_that_is_not_redis_stops_with_one_line(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv(shared_redis.REDIS_URL_ENV, url)
    with pytest.raises(SystemExit) as stopped:
        shared_redis.from_env()
    message = str(stopped.value)
    assert message.startswith("error: GATEHOUSE_REDIS_URL is not a Redis URL") and "\n" not in message
    assert "redis://HOST:PORT/DB" in message
