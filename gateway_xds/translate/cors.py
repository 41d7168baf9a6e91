"""CORS for model services (browser clients): preflight requests are answered by Envoy itself, before
auth, for any origin; the real request then needs its credential like any other."""

from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2

CORS_FILTER = "envoy.filters.http.cors"
# `*` does not cover Authorization in browsers, so it is named.
ALLOW_HEADERS = "authorization, content-type, *"
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
MAX_AGE_SECONDS = 86_400


def cors_policy() -> cors_pb2.CorsPolicy:
    any_origin = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
    return cors_pb2.CorsPolicy(
        allow_origin_string_match=[any_origin],
        allow_methods=ALLOW_METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers="*",
        max_age=str(MAX_AGE_SECONDS),
    )
