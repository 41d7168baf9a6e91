"""Small network probes: is a TCP port accepting, what does a plain HTTP GET answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Coroutine
from typing import Any


async def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def http_get(
    host: str, port: int, path: str, timeout: float = 2.0, host_header: str | None = None
) -> tuple[int, str]:
    """Status and body of `GET path` (one request, then the connection closes); (0, error) if none."""
    return await _get(asyncio.open_connection(host, port), host_header or host, path, timeout)


async def unix_http_get(socket_path: str, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """`http_get` over a Unix socket (Envoy's admin interface on gateway hosts)."""
    return await _get(asyncio.open_unix_connection(socket_path), "localhost", path, timeout)


async def _get(
    connecting: Coroutine[Any, Any, tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    host: str,
    path: str,
    timeout: float,
) -> tuple[int, str]:
    async def fetch() -> tuple[int, str]:
        reader, writer = await connecting
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return int(status_line[1]) if len(status_line) > 1 else 0, body.decode(errors="replace")

    try:
        return await asyncio.wait_for(fetch(), timeout)
    except (OSError, TimeoutError, ValueError) as error:
        return 0, str(error)


def _dechunk(body: bytes) -> bytes:
    chunks = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(chunks)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
