"""HTTP probes against a real server on loopback: what passes, what each failure says, and the
streaks that make a replica ready and take it out again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gatehouse.v1 import resources_pb2
from services.provisioner.readiness import Streaks, probe_once, probe_round

Seen = list[bytes]


@pytest.fixture
async def app() -> AsyncIterator[tuple[int, Seen, dict[str, int]]]:
    """Answers `/status/<n>` with n, `/slow` never; records every request it reads, whole."""
    seen: Seen = []
    answers = {"/": 200}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        request = head + (await reader.readexactly(length) if length else b"")
        seen.append(request)
        path = head.split(b" ")[1].decode().partition("?")[0]
        if path == "/slow":
            await asyncio.sleep(5)
        status = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else answers.get(path, 404)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, seen, answers
    finally:
        server.close()


def _probe(**fields: Any) -> resources_pb2.Probe:
    defaults: dict[str, Any] = {
        "url": "/",
        "method": "GET",
        "timeout_seconds": 1,
        "ready_after": 1,
        "unready_after": 1,
    }
    return resources_pb2.Probe(**{**defaults, **fields})


async def test_the_request_carries_method_headers_and_body(app: tuple[int, Seen, dict[str, int]]) -> None:
    port, seen, _ = app
    probe = _probe(
        url="/status/204?check=1",
        method="POST",
        body='{"ping": 1}',
        headers=[resources_pb2.ProbeHeader(name="X-Check", value="yes")],
    )
    assert await probe_once("127.0.0.1", port, probe) is None
    request = seen[-1]
    assert request.startswith(b"POST /status/204?check=1 HTTP/1.1\r\n")
    assert b"\r\nX-Check: yes\r\n" in request and b"\r\nContent-Length: 11\r\n" in request
    assert request.endswith(b'\r\n\r\n{"ping": 1}')


async def test_each_failure_says_what_happened(app: tuple[int, Seen, dict[str, int]]) -> None:
    port, _, _ = app
    assert (
        await probe_once("127.0.0.1", port, _probe(url="/status/500"))
        == "probe GET /status/500 answered 500, not 2xx"
    )
    assert (
        await probe_once("127.0.0.1", port, _probe(url="/status/200", expected_status=[204, 205]))
        == "probe GET /status/200 answered 200, not 204, 205"
    )
    assert (
        await probe_once("127.0.0.1", port, _probe(url="/slow")) == "probe GET /slow got no answer within 1s"
    )
    closed = await probe_once("127.0.0.1", _closed_port(), _probe())
    assert closed is not None and closed.startswith("probe GET / failed: ")


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_ready_after_passes_in_a_row_and_out_after_failures_in_a_row(
    app: tuple[int, Seen, dict[str, int]],
) -> None:
    port, _, answers = app
    probes = [_probe(url="/a", ready_after=2, unready_after=2), _probe(url="/b")]
    answers.update({"/a": 200, "/b": 200})
    streaks = Streaks()
    assert not await probe_round("127.0.0.1", port, probes, streaks)  # /a has passed once of twice
    answers["/a"] = 503
    assert not await probe_round("127.0.0.1", port, probes, streaks)  # the streak starts again
    answers["/a"] = 200
    assert not await probe_round("127.0.0.1", port, probes, streaks)
    assert await probe_round("127.0.0.1", port, probes, streaks)
    answers["/b"] = 500  # one failure of /b takes it out (unready_after 1)
    assert not await probe_round("127.0.0.1", port, probes, streaks)
    assert streaks.reason == "probe GET /b answered 500, not 2xx"
    answers["/b"] = 200
    assert not await probe_round("127.0.0.1", port, probes, streaks)  # /a needs two passes again
    assert await probe_round("127.0.0.1", port, probes, streaks)
    answers["/a"] = 500
    assert await probe_round("127.0.0.1", port, probes, streaks)  # one failure of /a is not two
    assert not await probe_round("127.0.0.1", port, probes, streaks)


async def test_an_answer_that_is_not_http_fails(app: tuple[int, Seen, dict[str, int]]) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        failure = await probe_once("127.0.0.1", server.sockets[0].getsockname()[1], _probe())
    finally:
        server.close()
    assert failure == "probe GET / failed: not an HTTP answer: b'SSH-2.0-OpenSSH\\r\\n'"
