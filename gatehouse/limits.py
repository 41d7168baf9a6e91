"""How big what users send may be, at each layer it passes, and how to say so.

One place for the numbers: the CLI refuses a file before it sends it, the API refuses a message
before it reads it, the registry refuses a configuration before it stores it, and a replica's
environment is held to what `execve` takes. Each layer's limit is above the one before it, so a
user meets the first, clearest message."""

from __future__ import annotations

KIB = 1 << 10
MIB = 1 << 20

# A `*.dstack.yml` the CLI reads (comments and all).
CONFIGURATION_FILE_BYTES = 1 * MIB
# A gRPC request the API accepts (responses, such as snapshots, may be larger).
API_REQUEST_BYTES = 4 * MIB
# A configuration the registry stores, as JSON.
CONFIGURATION_BYTES = 256 * KIB
# A replica's environment from `env`, with ${{ secrets.X }} resolved: Linux takes at most 128 KiB
# in one variable and 2 MiB with the arguments; well under both.
ENV_BYTES = 128 * KIB
# One secret's value.
SECRET_VALUE_BYTES = 64 * KIB
# The largest gRPC message between Gatehouse's processes and to Envoys (snapshots, xDS responses).
GRPC_MESSAGE_BYTES = 64 * MIB


def size(count: int) -> str:
    """`300 KiB`, `5.1 MiB`, `12 bytes`: sizes as people read them."""
    if count >= MIB:
        return f"{count / MIB:.1f} MiB".replace(".0 ", " ")
    if count >= KIB:
        return f"{count / KIB:.0f} KiB"
    return f"{count} bytes"


def env_bytes(env: dict[str, str]) -> int:
    """What `env` takes in a process's environment: `KEY=VALUE\\0` each."""
    return sum(len(key.encode()) + len(value.encode()) + 2 for key, value in env.items())
