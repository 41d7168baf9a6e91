"""What the replicas learn about the original request (X-Forwarded-*, X-Real-IP).

With `use_remote_address` Envoy itself sets X-Forwarded-For (appending the peer) and
X-Forwarded-Proto (the scheme the client used), and `append_x_forwarded_port` X-Forwarded-Port.
These add the rest, overwriting whatever the client sent.
"""

from envoy.config.core.v3 import base_pb2

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

FORWARDED_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-real-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    ("x-forwarded-host", "%REQ(:AUTHORITY)%"),
)


def forwarded_headers() -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
        )
        for key, value in FORWARDED_HEADERS
    ]
