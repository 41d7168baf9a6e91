"""Small network probes: is a TCP port accepting, what does a plain HTTP GET answer."""

from __future__ import annotations

import asyncio
import contextlib
import socket


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

    async def fetch() -> tuple[int, str]:
        reader, writer = await asyncio.open_connection(host, port)
        request = f"GET {path} HTTP/1.1\r\nHost: {host_header or host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        return int(status_line[1]) if len(status_line) > 1 else 0, body.decode(errors="replace")

    try:
        return await asyncio.wait_for(fetch(), timeout)
    except (OSError, TimeoutError, ValueError) as error:
        return 0, str(error)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
