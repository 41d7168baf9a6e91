"""The YAML configurations users apply (`type: gateway`, `type: service`), as validated models.

Field descriptions double as the reference documentation.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gatehouse import limits, scaling
from services.common.errors import FailedPrecondition, InvalidArgument
from services.registry.configuration_errors import describe, format_validation_error

BACKENDS = ("local", "aws", "gcp", "azure", "kubernetes")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,40}$")
DOMAIN_PATTERN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
PORT_PATTERN = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")
RANGE_PATTERN = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")
DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*([smh]?)\s*$")
TAG_KEY_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.:/=+@-]{0,62}$")
TAG_VALUE_PATTERN = re.compile(r"^[A-Za-z0-9 _.:/=+@-]{0,255}$")
HEADER_PATTERN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `${{ ... }}` anywhere in a string, and the one form Gatehouse resolves.
INTERPOLATION = re.compile(r"\$\{\{(.*?)(\}\}|$)")
SECRET_REFERENCE = re.compile(r"^\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*$")
# What `parse_configuration` passes as validation context: rules for new input only, so that a
# stored spec written under older rules still loads.
ADMISSION = {"admission": True}
MAX_REPLICAS = 100
DEFAULT_GATEWAY_PORT = 80


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LetsEncryptCertificate(_Strict):
    type: Literal["lets-encrypt"] = "lets-encrypt"


class AcmCertificate(_Strict):
    type: Literal["acm"]
    arn: str = Field(description="The ARN of an ISSUED AWS Certificate Manager certificate")


CertificateConfig = Annotated[LetsEncryptCertificate | AcmCertificate, Field(discriminator="type")]
CERTIFICATE_FORMS = "use lets-encrypt (the default), {type: acm, arn: ARN} or null"


def _certificate_shape(value: Any) -> Any:
    """`certificate: lets-encrypt` is short for `{type: lets-encrypt}`; anything else is explained."""
    if value is None:
        return None
    if value == "lets-encrypt":
        return {"type": "lets-encrypt"}
    if value == "acm":
        raise ValueError("acm needs the certificate's ARN: {type: acm, arn: ARN}")
    if isinstance(value, dict):
        kind = value.get("type", "lets-encrypt")
        if kind not in ("lets-encrypt", "acm"):
            raise ValueError(f"{CERTIFICATE_FORMS}, not type {describe(kind)}")
        return {"type": kind, **value}
    raise ValueError(f"{CERTIFICATE_FORMS}, not {describe(value)}")


def _check_name(value: str | None) -> str | None:
    if value is not None and not NAME_PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 2-41 lowercase letters, digits and dashes, "
            "starting with a letter"
        )
    return value


class GatewayConfig(_Strict):
    type: Literal["gateway"] = "gateway"
    name: str | None = Field(None, description="The gateway's name; a readable one is generated if omitted")
    backend: str = Field(description="Where the gateway host runs: local, aws, gcp, azure or kubernetes")
    region: str = Field(description="The backend's region (`local` for the local backend)")
    domain: str | None = Field(None, description="Services get `<run-name>.<domain>`")
    default: bool = Field(False, description="Make this the project's default gateway")
    public_ip: bool = Field(True, description="false makes the gateway private")
    certificate: CertificateConfig | None = Field(
        default_factory=LetsEncryptCertificate, description="lets-encrypt (default), acm, or null"
    )
    instance_type: str | None = Field(None, description="A larger instance for high-traffic services")
    replicas: int = Field(1, ge=1, le=16, description="How many gateway hosts")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags put on every cloud resource")
    address: str | None = Field(
        None,
        description="The local backend: the address Envoy binds on this machine (a LAN address, 0.0.0.0); "
        "a loopback address of the gateway's own if omitted",
    )
    replica_networks: list[str] = Field(
        default_factory=list,
        description="Networks (CIDR) that replicas registered by users and agents may be in; "
        "any private network if omitted",
    )
    router: Any = Field(None, exclude=True)

    _name = field_validator("name")(_check_name)
    _certificate = field_validator("certificate", mode="before")(_certificate_shape)

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if not TAG_KEY_PATTERN.match(key):
                raise ValueError(
                    f"tag key {key!r} is not valid: start with a letter; letters, digits, _.:/=+@-"
                )
            if not TAG_VALUE_PATTERN.match(tag):
                raise ValueError(
                    f"tag value {tag!r} of {key!r} is not valid: letters, digits, spaces, _.:/=+@-"
                )
        return value

    @model_validator(mode="after")
    def _certificate_needs_public_ip(self) -> GatewayConfig:
        if not self.public_ip and isinstance(self.certificate, LetsEncryptCertificate):
            raise ValueError(
                "lets-encrypt certificates need a public IP: with `public_ip: false` "
                "set `certificate: null` (or acm on aws)"
            )
        return self

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            address = ipaddress.ip_address(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (for example: 127.0.0.2 or 0.0.0.0)") from None
        if address.is_multicast or (address.is_link_local and address.version == 6):
            raise ValueError(f"{value!r} cannot be bound by a gateway: use a loopback, LAN or 0.0.0.0 one")
        return str(address)

    @field_validator("replica_networks")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        networks = []
        for text in value:
            try:
                networks.append(str(ipaddress.ip_network(str(text).strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{text!r} is not a network: use CIDR like 10.0.0.0/16") from None
        return networks

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"{value!r} is not a backend: use one of {', '.join(BACKENDS)}")
        return value

    @field_validator("domain")
    @classmethod
    def _valid_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        domain = value.strip().lower().removeprefix("*.")
        if not DOMAIN_PATTERN.match(domain):
            raise ValueError(f"{value!r} is not a DNS name (for example: example.com)")
        return domain

    @field_validator("router")
    @classmethod
    def _no_router(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("routing configuration now lives on services: move `router` to the service")
        return value


def parse_port(value: int | str) -> tuple[int, int]:
    """`8000` → (80, 8000); `"5001:8000"` → (5001, 8000)."""
    match = PORT_PATTERN.match(str(value))
    if match is None:
        raise ValueError(f'{value!r} is not a port: use 8000 or "<gateway-port>:<app-port>" like "5001:8000"')
    first, second = int(match.group(1)), match.group(2)
    gateway_port, app_port = (first, int(second)) if second is not None else (DEFAULT_GATEWAY_PORT, first)
    for port in (gateway_port, app_port):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range: use 1-65535")
    return gateway_port, app_port


def parse_duration(value: int | str) -> int:
    """Seconds from `90`, `"90s"`, `"5m"` or `"1h"`."""
    match = DURATION_PATTERN.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a duration: use seconds (90) or 90s, 5m, 1h")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def parse_replicas(value: int | str) -> tuple[int, int]:
    """`2` → (2, 2); `"1..4"` → (1, 4)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"use a number (2) or a range (1..4), not {describe(value)}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{value} is not a replica count: use 1 or more (or a range 0..4 with `scaling`)")
    if isinstance(value, int) or str(value).strip().isdigit():
        count = int(value)
        low, high = count, count
    else:
        match = RANGE_PATTERN.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a replica count: use a number (2) or a range (1..4)")
        low, high = int(match.group(1)), int(match.group(2))
        if low > high:
            raise ValueError(f"replicas {value!r}: the minimum is above the maximum")
    if high > MAX_REPLICAS:
        raise ValueError(f"replicas {value!r}: at most {MAX_REPLICAS}")
    return low, high


class ScalingConfig(_Strict):
    metric: scaling.Metric = Field(
        description="What drives scaling: requests per second, or requests in flight (concurrency)"
    )
    target: float = Field(
        gt=0, description="Per replica: requests per second (rps), or requests in flight (concurrency)"
    )
    window: int | str = Field(60, description="Averaging window: 30s, 60s (1m) or 300s (5m)")
    scale_up_delay: int | str = Field(300, description="How long load must stay high before adding replicas")
    scale_down_delay: int | str = Field(
        600, description="How long load must stay low before removing replicas"
    )

    @field_validator("window")
    @classmethod
    def _valid_window(cls, value: int | str) -> int:
        seconds = parse_duration(value)
        if seconds not in (30, 60, 300):
            raise ValueError(f"window {value!r}: use 30s, 60s or 300s")
        return seconds

    @field_validator("scale_up_delay", "scale_down_delay")
    @classmethod
    def _valid_delay(cls, value: int | str) -> int:
        return parse_duration(value)


class HeaderKey(_Strict):
    type: Literal["header"]
    header: str = Field(description="The request header whose value is limited")

    @field_validator("header")
    @classmethod
    def _valid_header(cls, value: str) -> str:
        if not HEADER_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a header name")
        return value.lower()


class IpAddressKey(_Strict):
    type: Literal["ip_address"] = "ip_address"


MIN_RPS = 1 / 60
KEY_FORMS = "use ip_address or {type: header, header: NAME}"


class RateLimitConfig(_Strict):
    prefix: str = Field("/", description="Requests whose path starts with this; the longest prefix wins")
    rps: float = Field(description="Sustained requests per second (down to 1/60: one a minute)")
    burst: int = Field(0, ge=0, description="Extra requests allowed at once")
    key: Annotated[IpAddressKey | HeaderKey, Field(discriminator="type")] = Field(
        default_factory=IpAddressKey, description="ip_address (default) or {type: header, header: NAME}"
    )
    scope: Literal["local", "global"] = Field(
        "local",
        description="local: each gateway host counts on its own (default); global: shared by all hosts",
    )

    @field_validator("rps", mode="before")
    @classmethod
    def _valid_rps(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"use a number of requests per second, not {describe(value)}")
        # A small tolerance: 0.0167 is what people write for one a minute.
        if value < MIN_RPS - 1e-4:
            raise ValueError(f"use at least 1/60 (one request a minute), not {describe(value)}")
        return max(float(value), MIN_RPS)

    @field_validator("key", mode="before")
    @classmethod
    def _short_key(cls, value: Any) -> Any:
        if value is None or value == "ip_address":
            return {"type": "ip_address"}
        if value == "header":
            raise ValueError("a header key needs the header's name: {type: header, header: NAME}")
        if isinstance(value, dict) and value.get("type") == "header" and "header" not in value:
            raise ValueError("a header key needs the header's name: {type: header, header: NAME}")
        if isinstance(value, dict) and value.get("type") in ("ip_address", "header"):
            return value
        if isinstance(value, dict):
            return _raise(f"{KEY_FORMS}, not type {describe(value.get('type'))}")
        return _raise(f"{KEY_FORMS}, not {describe(value)}")

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"prefix {value!r} must start with /")
        return value


PROBE_METHODS = ("get", "post", "put", "delete", "patch", "head")
MAX_PROBES = 8
MAX_PROBE_HEADERS = 16
MAX_PROBE_URL_CHARS = 2048
MAX_PROBE_BODY_CHARS = 2048


class ProbeHeader(_Strict):
    name: str = Field(description="The header's name")
    value: str = Field(description="Its value")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not HEADER_PATTERN.match(value) or len(value) > 256:
            raise ValueError(f"{value[:64]!r} is not a header name: letters, digits and -, at most 256")
        return value

    @field_validator("value")
    @classmethod
    def _valid_value(cls, value: str) -> str:
        if not value or len(value) > 2048 or not value.isprintable():
            raise ValueError("a header value is 1 to 2048 printable characters, on one line")
        return value


def _probe_seconds(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"use seconds (10) or 10s, 1m, not {describe(value)}")
    seconds = parse_duration(value)
    if seconds < 1:
        raise ValueError(f"{value!r} is under a second: use 1s or more")
    return seconds


class ProbeConfig(_Strict):
    """dstack's HTTP probe, plus `expected_status` and `unready_after`."""

    type: Literal["http"] = Field(description="http (the only kind)")
    url: str = Field("/", description="The path (and query) asked; default /")
    method: Literal["get", "post", "put", "delete", "patch", "head"] = Field("get", description="default get")
    headers: list[ProbeHeader] = Field(default_factory=list, description="[{name, value}], at most 16")
    body: str | None = Field(None, description="The request body (not with get or head)")
    timeout: int | str = Field(10, description="How long one probe may take; default 10s")
    interval: int | str = Field(15, description="Between the end of one probe and the next; default 15s")
    ready_after: int = Field(1, ge=1, description="Passes in a row before the replica takes traffic")
    unready_after: int = Field(3, ge=1, description="Failures in a row before it leaves the endpoints")
    expected_status: list[int] = Field(
        default_factory=list, description="The statuses that pass (200 or [200, 204]); default any 2xx"
    )
    until_ready: bool = Field(False, description="Stop probing once the replica is ready")

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if value != "http":
            raise ValueError(f"use type: http, not {describe(value)}")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _lower_method(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in PROBE_METHODS:
            return value.lower()
        return _raise(f"use one of {', '.join(PROBE_METHODS)}, not {describe(value)}")

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value[:64]!r} must start with / (the path asked, like /health)")
        if len(value) > MAX_PROBE_URL_CHARS:
            raise ValueError(f"the url is {len(value)} characters: at most {MAX_PROBE_URL_CHARS}")
        if not value.isprintable() or " " in value:
            raise ValueError("the url may not contain spaces or control characters (encode them: %20)")
        return value

    @field_validator("headers", mode="before")
    @classmethod
    def _few_headers(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > MAX_PROBE_HEADERS:
            raise ValueError(f"{len(value)} headers: at most {MAX_PROBE_HEADERS}")
        if isinstance(value, dict):
            raise ValueError("use a list: - {name: X-Check, value: '1'}")
        return value

    @field_validator("body")
    @classmethod
    def _valid_body(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value) <= MAX_PROBE_BODY_CHARS:
            raise ValueError(f"a body is 1 to {MAX_PROBE_BODY_CHARS} characters, not {len(value)}")
        return value

    _seconds = field_validator("timeout", "interval", mode="before")(_probe_seconds)

    @field_validator("ready_after", "unready_after", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"use a whole number of probes (1 or more), not {describe(value)}")
        if not 1 <= value <= 100:
            raise ValueError(f"use 1 to 100 probes in a row, not {value}")
        return value

    @field_validator("expected_status", mode="before")
    @classmethod
    def _statuses(cls, value: Any) -> Any:
        listed = value if isinstance(value, list) else [value]
        for status in listed:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ValueError(f"use HTTP statuses (200 or [200, 204]), not {describe(status)}")
        return listed

    @model_validator(mode="after")
    def _body_needs_method(self) -> ProbeConfig:
        if self.body is not None and self.method in ("get", "head"):
            raise ValueError(f"a {self.method} probe sends no body: use method: post (or drop body)")
        return self


class CanaryConfig(_Strict):
    """A change rolls out as a canary: its replicas get `weight` percent of the requests (and every
    request carrying `header`) until `gatehouse service promote|abort NAME`."""

    weight: int = Field(description="Percent of requests the new version gets, 1-99")
    header: str | None = Field(None, description="Requests carrying this header go to the new version")

    @field_validator("weight", mode="before")
    @classmethod
    def _valid_weight(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 99:
            raise ValueError(f"use a whole percent from 1 to 99, not {describe(value)}")
        return value

    @field_validator("header")
    @classmethod
    def _valid_header(cls, value: str | None) -> str | None:
        if value is not None and (not HEADER_PATTERN.match(value) or len(value) > 256):
            raise ValueError(f"{value[:64]!r} is not a header name: letters, digits and -, at most 256")
        return value.lower() if value is not None else None


class RolloutConfig(_Strict):
    """The bounds of a rolling update: how many new replicas start beyond the desired count at once,
    and how many ready replicas short of it the service may be while old ones stop."""

    max_surge: int = Field(1, description="New replicas beyond the desired count at once (default 1)")
    max_unavailable: int = Field(0, description="Ready replicas the service may be short of (default 0)")

    @field_validator("max_surge", "max_unavailable", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPLICAS:
            raise ValueError(f"use a number of replicas from 0 to {MAX_REPLICAS}, not {describe(value)}")
        return value

    @model_validator(mode="after")
    def _moves(self) -> RolloutConfig:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0: the rollout could not start")
        return self


def _raise(message: str) -> Any:
    raise ValueError(message)


def _env_mapping(value: Any) -> Any:
    """dstack's two forms of `env`: a mapping, or a list of `KEY=VALUE` (a bare `KEY` is filled by
    the CLI from its own environment before the configuration is sent). Numbers and booleans are
    written as text, as a shell would see them."""
    if value is None:
        return {}
    if isinstance(value, list):
        mapping: dict[str, Any] = {}
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"item {index + 1}: write KEY=VALUE, not {describe(item)}")
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(
                    f"item {index + 1} ({key or item!r}) has no value: write {key or 'KEY'}=VALUE "
                    "(the CLI fills a bare `- KEY` from its own environment)"
                )
            if key in mapping:
                raise ValueError(f"{key} is set twice")
            mapping[key] = text
        value = mapping
    if not isinstance(value, dict):
        raise ValueError(f"use a mapping (KEY: VALUE) or a list (- KEY=VALUE), not {describe(value)}")
    env: dict[str, str] = {}
    for key, item in value.items():
        if not ENV_NAME_PATTERN.match(str(key)):
            raise ValueError(
                f"{str(key)!r} is not a variable name: letters, digits and _, not starting with a digit"
            )
        if isinstance(item, bool):
            env[key] = "true" if item else "false"
        elif isinstance(item, int | float | str):
            env[key] = item if isinstance(item, str) else describe(item)
        elif item is None:
            raise ValueError(f"{key} has no value: write {key}: VALUE")
        else:
            raise ValueError(f"{key} must be text, not {describe(item)}")
    return env


class ServiceConfig(_Strict):
    type: Literal["service"] = "service"
    name: str | None = Field(None, description="The run name; generated if omitted")
    gateway: str | bool | None = Field(
        None, description="A gateway name, `<project>/<name>`, its hostname or IP, true (default), false"
    )
    port: int | str = Field(description='The app port, or "<gateway-port>:<app-port>"')
    https: bool | Literal["auto"] = Field(True, description="true (default), false or auto")
    auth: bool = Field(True, description="Require a project member's token (default true)")
    replicas: int | str = Field(1, description="A count (2) or, with `scaling`, a range (1..4)")
    scaling: ScalingConfig | None = Field(None, description="Autoscaling on requests per second")
    rate_limits: list[RateLimitConfig] = Field(default_factory=list, description="Per-prefix rate limits")
    probes: list[ProbeConfig] = Field(
        default_factory=list, description="HTTP readiness probes: traffic only to replicas passing all"
    )
    canary: CanaryConfig | None = Field(None, description="Roll changes out as a canary: {weight: 10}")
    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig, description="Rolling update bounds: {max_surge: 1, max_unavailable: 0}"
    )
    commands: list[str] = Field(default_factory=list, description="Shell commands that start a replica")
    env: dict[str, str] = Field(default_factory=dict)
    model: str | None = None

    _name = field_validator("name")(_check_name)
    _env = field_validator("env", mode="before")(_env_mapping)

    @field_validator("gateway", mode="before")
    @classmethod
    def _gateway_shape(cls, value: Any) -> Any:
        if value is None or isinstance(value, str | bool):
            return value
        return _raise(
            f"use a gateway name, <project>/<name>, its address, true or false, not {describe(value)}"
        )

    @field_validator("https", mode="before")
    @classmethod
    def _https_shape(cls, value: Any) -> Any:
        if isinstance(value, bool) or value == "auto":
            return value
        return _raise(f"use true, false or auto, not {describe(value)}")

    @field_validator("commands", mode="before")
    @classmethod
    def _commands_shape(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("use a list of shell commands, one `- command` a line")
        return value

    @field_validator("probes", mode="before")
    @classmethod
    def _probes_shape(cls, value: Any) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            return _raise(f"use a list of probes (- type: http, url: /health), not {describe(value)}")
        if len(value) > MAX_PROBES:
            return _raise(f"{len(value)} probes: at most {MAX_PROBES}")
        return value

    @field_validator("canary", mode="before")
    @classmethod
    def _canary_shape(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict):
            return value
        return _raise(
            "use {weight: 10} (percent of requests), or {weight: 10, header: X-Canary}, "
            f"not {describe(value)}"
        )

    @field_validator("replicas", mode="before")
    @classmethod
    def _valid_replicas(cls, value: Any) -> Any:
        parse_replicas(value)
        return value

    @model_validator(mode="after")
    def _admission(self, info: ValidationInfo) -> ServiceConfig:
        """Rules for what is applied now (stored specs from older rules still load)."""
        if not (info.context or {}).get("admission"):
            return self
        if self.replica_range[1] == 0:
            raise ValueError(
                "`replicas: 0` runs no replica: use 1 or more, "
                "or a range 0..N with `scaling` to scale to zero"
            )
        used = limits.env_bytes(self.env)
        if used > limits.ENV_BYTES:
            raise ValueError(
                f"`env` is {limits.size(used)}: a replica's environment is at most "
                f"{limits.size(limits.ENV_BYTES)} (put large values in a file the commands read)"
            )
        return self

    @model_validator(mode="after")
    def _scaling_rules(self) -> ServiceConfig:
        low, high = self.replica_range
        if low != high and self.scaling is None:
            raise ValueError(f"replicas {self.replicas!r} is a range: add `scaling` (metric: rps, target: N)")
        if self.scaling is not None and low == high:
            raise ValueError("`scaling` needs a replica range such as `replicas: 1..4`")
        prefixes = [limit.prefix for limit in self.rate_limits]
        duplicates = sorted({prefix for prefix in prefixes if prefixes.count(prefix) > 1})
        if duplicates:
            raise ValueError(f"rate_limits: prefix {duplicates[0]!r} appears more than once")
        return self

    @property
    def replica_range(self) -> tuple[int, int]:
        return parse_replicas(self.replicas)

    @field_validator("port", mode="before")
    @classmethod
    def _valid_port(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(
                f'use 8000 or "<gateway-port>:<app-port>" like "5001:8000", not {describe(value)}'
            )
        parse_port(value)
        return value

    @property
    def ports(self) -> tuple[int, int]:
        return parse_port(self.port)

    @property
    def maps_port(self) -> bool:
        """Whether the port says which gateway port to use (`"5001:8000"`)."""
        return ":" in str(self.port)


TYPES = ("gateway", "service")


def check_size(data: dict[str, Any]) -> None:
    """A configuration is stored whole, as JSON: it has a size limit of its own."""
    used = len(json.dumps(data, separators=(",", ":")).encode())
    if used > limits.CONFIGURATION_BYTES:
        raise InvalidArgument(
            f"the configuration is {limits.size(used)}: at most {limits.size(limits.CONFIGURATION_BYTES)}"
        )


def check_environment(env: dict[str, str], resolved: bool = True) -> None:
    """A replica's environment, its secrets resolved, within what a process is given."""
    used = limits.env_bytes(env)
    if used > limits.ENV_BYTES:
        secrets = " with its secrets resolved" if resolved else ""
        raise FailedPrecondition(
            f"`env` is {limits.size(used)}{secrets}: a replica's environment is at most "
            f"{limits.size(limits.ENV_BYTES)} (put large values in a file the commands read)"
        )


def _strings(value: Any, where: str) -> Any:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


def check_interpolations(data: dict[str, Any]) -> None:
    """Every `${{ ... }}` is `${{ secrets.NAME }}`: a typo is a bad interpolation, said so, not an
    unknown gateway or a command that fails later."""
    for where, text in _strings(data, ""):
        for match in INTERPOLATION.finditer(text):
            inner, closed = match.group(1), match.group(2)
            written = match.group(0).strip()
            if not closed:
                raise ValueError(f"`{where}`: {written!r} is not closed: write ${{{{ secrets.NAME }}}}")
            if SECRET_REFERENCE.match(inner):
                continue
            prefix, _, name = inner.strip().partition(".")
            if name and ENV_NAME_PATTERN.match(name) and difflib.get_close_matches(prefix, ["secrets"]):
                hint = f"did you mean ${{{{ secrets.{name} }}}}?"
            else:
                hint = "only ${{ secrets.NAME }} is resolved"
            raise ValueError(f"`{where}`: {written} is not an interpolation Gatehouse knows: {hint}")


def parse_configuration(data: dict[str, Any]) -> GatewayConfig | ServiceConfig:
    """A configuration as applied (its secrets outside `env` and `commands` resolved): checked for
    size, interpolation and every rule, with one line for everything wrong."""
    kind = data.get("type")
    model: type[GatewayConfig] | type[ServiceConfig]
    if kind == "gateway":
        model = GatewayConfig
    elif kind == "service":
        model = ServiceConfig
    elif kind is None:
        raise InvalidArgument("`type` is required: gateway or service")
    else:
        match = difflib.get_close_matches(str(kind), TYPES, n=1)
        hint = f" (did you mean {match[0]}?)" if match else ""
        raise InvalidArgument(f"`type` must be gateway or service, not {describe(kind)}{hint}")
    check_size(data)
    try:
        check_interpolations(data)
        return model.model_validate(data, context=ADMISSION)
    except ValueError as error:
        # pydantic's ValidationError is a ValueError too.
        message = format_validation_error(error, model) if isinstance(error, ValidationError) else str(error)
        raise InvalidArgument(f"{kind} configuration: {message}") from None
