"""`python -m gateway_xds`: gateway_xds alone, importing nothing of the other services.

`gatehouse xds` does the same through the CLI, which imports every service (cloud SDKs included);
this entry point keeps the control plane's process to what it runs. Plain-text xDS, like
`gatehouse xds`; `gatehouse server` adds mTLS.

    python -m gateway_xds [--registry HOST:PORT] [--host H] [--port P]

The registry's address defaults to $GATEHOUSE_REGISTRY (else 127.0.0.1:50051), the token to
$GATEHOUSE_SYSTEM_TOKEN (else $GATEHOUSE_HOME/server/system-token), the xDS address to
$GATEHOUSE_XDS_HOST:$GATEHOUSE_XDS_PORT (else 127.0.0.1:50052). With $GATEHOUSE_REDIS_URL, copies
share their rate limits, request counters and wake requests there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

from gatehouse.client.connection import Stubs
from gatehouse.client.defaults import DEFAULT_API_ADDRESS, DEFAULT_XDS_PORT, gatehouse_home
from gateway_xds.app import XdsApp
from gateway_xds.shared import redis as shared_redis


def _token() -> str:
    token = os.environ.get("GATEHOUSE_SYSTEM_TOKEN")
    if token:
        return token
    path = gatehouse_home() / "server" / "system-token"
    try:
        return path.read_text().strip()
    except OSError:
        message = f"error: no token: set GATEHOUSE_SYSTEM_TOKEN or start the registry (it writes {path})"
        raise SystemExit(message) from None


async def _serve(registry: str, address: str) -> None:
    stubs = Stubs.connect(registry, _token())
    app = XdsApp.build(stubs, address, own_process=True, shared=shared_redis.from_env())
    print(f"gateway_xds is running on {address.rsplit(':', 1)[0]}:{app.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    running = asyncio.create_task(app.run())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
    for task in (running, stopping):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await stubs.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway_xds", description="run gateway_xds alone")
    parser.add_argument("--registry", default=os.environ.get("GATEHOUSE_REGISTRY") or DEFAULT_API_ADDRESS)
    parser.add_argument("--host", default=os.environ.get("GATEHOUSE_XDS_HOST") or "127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GATEHOUSE_XDS_PORT") or DEFAULT_XDS_PORT)
    )
    args = parser.parse_args()
    level = os.environ.get("GATEHOUSE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args.registry, f"{args.host}:{args.port}"))


if __name__ == "__main__":
    main()
