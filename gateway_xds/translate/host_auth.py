"""Auth checked by Envoy itself, with no control plane to ask: a Lua filter hashes the request's bearer
value (SHA-256, lua/sha256.lua) and looks it up among the hashes its virtual host carries (metadata:
hash -> principal; only hashes, never a credential), so checks go on with every gateway_xds down,
with the credentials of the last configuration Envoy received. A revocation is a route update.

* Let through: the credential is removed and the principal set (PRINCIPAL_HEADER), which the rate
  limits after the check count by.
* Refused: the request is marked (FAILURE_HEADER: why) and routed again, to the virtual host's refusal
  route for its prefix: 401 with a short JSON body, and under a rate-limited prefix first the
  failure's own bucket per client address (local rate limit, 429 beyond it), apart from every
  principal's allowance. One route per prefix whatever the reason, so that every failure of an
  address spends the same bucket.
* The per-route context carries the service and its table's version: each worker converts a table to
  Lua once per version, not per request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from gateway_xds.authz.credentials import PRINCIPAL_HEADER
from gateway_xds.ir.policies import Authorization, RateLimit, RateLimitKey
from gateway_xds.translate.config_source import pack
from gateway_xds.translate.rate_limits import RATE_LIMIT_FILTER, local_rate_limit

AUTH_CHECK_FILTER = "gatehouse.auth_check"
# Set by the check on a request it refuses (any copy the client sent is removed first): why.
FAILURE_HEADER = "x-gatehouse-auth-failure"
MISSING, REFUSED = "missing", "refused"
REFUSAL = (
    "send `Authorization: Bearer <token>` with a token of a member of the service's project or one of "
    "its API keys (none was sent, or the one sent is unknown, revoked, or for another project or service)"
)
# Tokens and API keys are under 50 bytes; a longer bearer value is refused without hashing it.
MAX_CREDENTIAL_BYTES = 256
# Credentials each Envoy worker keeps converted, all services together: a bound on the check's memory.
MAX_CACHED_CREDENTIALS = 1_000_000
SERVICE_KEY, VERSION_KEY = "service", "version"


@cache
def check_script() -> str:
    """The check's Lua: the names it shares with this module, SHA-256, the check."""
    names = {
        "PRINCIPAL_HEADER": PRINCIPAL_HEADER,
        "FAILURE_HEADER": FAILURE_HEADER,
        "MISSING": MISSING,
        "REFUSED": REFUSED,
        "SERVICE_KEY": SERVICE_KEY,
        "VERSION_KEY": VERSION_KEY,
    }
    header = "".join(f"local {name} = {json.dumps(value)}\n" for name, value in names.items())
    header += f"local MAX_CREDENTIAL_BYTES = {MAX_CREDENTIAL_BYTES}\n"
    header += f"local MAX_CACHED_CREDENTIALS = {MAX_CACHED_CREDENTIALS}\n"
    lua = resources.files("gateway_xds.translate") / "lua"
    return header + (lua / "sha256.lua").read_text() + (lua / "auth_check.lua").read_text()


def auth_check_filter() -> lua_pb2.Lua:
    """The same on every listener (a service's credentials are in its virtual host)."""
    return lua_pb2.Lua(
        default_source_code=base_pb2.DataSource(inline_string=check_script()),
        # Routed again only when refused (the script says so); a request let through keeps its route.
        clear_route_cache=wrappers_pb2.BoolValue(value=False),
    )


def table_version(authorization: Authorization) -> str:
    digest = hashlib.sha256()
    for credential in authorization.credentials:
        digest.update(f"{credential.hash}={credential.principal}\n".encode())
    return digest.hexdigest()[:32]


def checked_as(authorization: Authorization) -> Any:
    """The virtual host's per-filter config for the check: its service and its table's version."""
    context = struct_pb2.Struct()
    context.update({SERVICE_KEY: authorization.service_id, VERSION_KEY: table_version(authorization)})
    return pack(lua_pb2.LuaPerRoute(filter_context=context))


def not_checked() -> Any:
    return pack(lua_pb2.LuaPerRoute(disabled=True))


def credentials_metadata(authorization: Authorization) -> base_pb2.Metadata:
    """The virtual host's credential table, hash -> principal, where the check's script reads it."""
    table = struct_pb2.Struct()
    table.update({credential.hash: credential.principal for credential in authorization.credentials})
    return base_pb2.Metadata(filter_metadata={AUTH_CHECK_FILTER: table})


def refusal_route(
    prefix: str, limit: RateLimit | None, skip_checks: dict[str, Any]
) -> route_components_pb2.Route:
    """401 for the requests under `prefix` the check refused; with `limit`, each client address may
    fail at its rate (429 beyond), counted by each Envoy, whatever the limit's key and scope (a
    refused request has no principal, and an anonymous client picks its headers, not its address)."""
    policies = dict(skip_checks)
    if limit is not None:
        by_address = replace(limit, key=RateLimitKey.IP_ADDRESS, header="", shared=False)
        policies[RATE_LIMIT_FILTER] = pack(local_rate_limit(by_address, authenticated=False))
    marked = route_components_pb2.HeaderMatcher(name=FAILURE_HEADER, present_match=True)
    body = json.dumps({"error": "unauthorized", "message": REFUSAL})
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=prefix, headers=[marked]),
        direct_response=route_components_pb2.DirectResponseAction(
            status=401, body=base_pb2.DataSource(inline_string=body)
        ),
        response_headers_to_add=[
            _header("content-type", "application/json"),
            _header("www-authenticate", 'Bearer realm="gatehouse"'),
        ],
        typed_per_filter_config=policies,
    )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
