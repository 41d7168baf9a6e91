"""A service's `probes` run against one replica: each HTTP probe, and the streaks that make the
replica ready (`ready_after` passes in a row of every probe) or take it out of the endpoints
(`unready_after` failures in a row of any probe)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from gatehouse.v1 import resources_pb2

# What is read of an answer: its status line and headers (the body is not looked at).
MAX_HEAD_BYTES = 16 * 1024


def describe(probe: resources_pb2.Probe) -> str:
    return f"{probe.method or 'GET'} {probe.url or '/'}"


def passes(probe: resources_pb2.Probe, status: int) -> bool:
    if probe.expected_status:
        return status in probe.expected_status
    return 200 <= status <= 299


async def probe_once(host: str, port: int, probe: resources_pb2.Probe) -> str | None:
    """None when the replica answers as the probe expects; else what it did instead."""
    try:
        status = await asyncio.wait_for(_status(host, port, probe), max(1, probe.timeout_seconds))
    except TimeoutError:
        return f"probe {describe(probe)} got no answer within {max(1, probe.timeout_seconds)}s"
    except (OSError, ValueError) as error:
        return f"probe {describe(probe)} failed: {error or type(error).__name__}"
    if passes(probe, status):
        return None
    wanted = ", ".join(str(code) for code in probe.expected_status) or "2xx"
    return f"probe {describe(probe)} answered {status}, not {wanted}"


async def _status(host: str, port: int, probe: resources_pb2.Probe) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        body = probe.body.encode()
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"{probe.method or 'GET'} {probe.url or '/'} HTTP/1.1", f"Host: {authority}"]
        lines += [f"{header.name}: {header.value}" for header in probe.headers]
        lines += ["Connection: close", "User-Agent: gatehouse-probe"]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        if len(status_line) > MAX_HEAD_BYTES:
            raise ValueError("the answer's status line is too long")
        parts = status_line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP answer: {status_line[:60]!r}")
        return int(parts[1])
    except asyncio.IncompleteReadError:
        raise ValueError("the connection closed before an answer") from None
    except asyncio.LimitOverrunError:
        raise ValueError("the answer's status line is too long") from None
    finally:
        writer.close()


@dataclass
class Streaks:
    """Per probe of one replica: passes and failures in a row, and the last failure's reason."""

    passed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    reason: str = ""
    # Once ready, until the failures take it out again.
    ready: bool = False

    def record(self, index: int, failure: str | None) -> None:
        while len(self.passed) <= index:
            self.passed.append(0)
            self.failed.append(0)
        if failure is None:
            self.passed[index] += 1
            self.failed[index] = 0
        else:
            self.passed[index] = 0
            self.failed[index] += 1
            self.reason = failure

    def judge(self, probes: Sequence[resources_pb2.Probe]) -> bool:
        """Whether the replica takes traffic after what was recorded."""
        if not self.ready:
            self.ready = all(
                index < len(self.passed) and self.passed[index] >= max(1, probe.ready_after)
                for index, probe in enumerate(probes)
            )
        elif any(
            index < len(self.failed) and self.failed[index] >= max(1, probe.unready_after)
            for index, probe in enumerate(probes)
        ):
            self.ready = False
            self.passed = [0] * len(probes)
        return self.ready


async def probe_round(host: str, port: int, probes: Sequence[resources_pb2.Probe], streaks: Streaks) -> bool:
    """Every probe once, at the same time; whether the replica takes traffic after them."""
    due = [(index, probe) for index, probe in enumerate(probes) if not (probe.until_ready and streaks.ready)]
    results = await asyncio.gather(*(probe_once(host, port, probe) for _, probe in due))
    for (index, _), failure in zip(due, results, strict=True):
        streaks.record(index, failure)
    return streaks.judge(probes)


def interval(probes: Sequence[resources_pb2.Probe]) -> float:
    """How often a replica's probes run: the shortest interval of them."""
    return float(min((max(1, probe.interval_seconds) for probe in probes), default=15))
