"""GatewayIR <-> plain dicts (the YAML form used by golden tests and debugging).

The dict form follows the IR's dataclasses field by field: a field with a default may be left out,
a nested dataclass is a mapping, a tuple a list and an enum its value. Unknown and missing keys are
errors that say where they are.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from enum import Enum
from typing import Any, Union, get_args, get_origin, get_type_hints

from gateway_xds.ir.agent_tunnels import AgentTunnels
from gateway_xds.ir.backends import Backend, Endpoint
from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.ir.listeners import HTTPListener
from gateway_xds.ir.policies import Authorization, OpeningCredential, RateLimit, ScaleFromZero
from gateway_xds.ir.routes import Canary, VirtualHost
from gateway_xds.ir.tls import AcmeChallenge, ServerCertificate, TLSPort, TLSSecret

_WHAT: dict[type, str] = {
    GatewayIR: "gateway",
    HTTPListener: "listener",
    VirtualHost: "virtual host",
    Backend: "backend",
    Endpoint: "endpoint",
    TLSPort: "TLS port",
    ServerCertificate: "certificate",
    TLSSecret: "secret",
    AcmeChallenge: "ACME challenge",
    Authorization: "authorization",
    OpeningCredential: "credential",
    RateLimit: "rate limit",
    ScaleFromZero: "scale from zero",
    AgentTunnels: "agent tunnels",
    Canary: "canary",
}


def ir_from_dict(data: Mapping[str, Any]) -> GatewayIR:
    decoded = _decode(GatewayIR, data)
    assert isinstance(decoded, GatewayIR)
    return decoded


def ir_to_dict(ir: GatewayIR) -> dict[str, Any]:
    encoded = _encode(ir)
    assert isinstance(encoded, dict)
    return encoded


def _decode(cls: type, data: Any) -> Any:
    what = _WHAT.get(cls, cls.__name__)
    fields = dataclasses.fields(cls)
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    _check_keys(what, data, required, {f.name for f in fields} - required)
    hints = get_type_hints(cls)
    return cls(**{name: _value(hints[name], value, what, name) for name, value in data.items()})


def _value(hint: Any, value: Any, what: str, name: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin is tuple:
        return tuple(_value(args[0], item, what, name) for item in value or ())
    if origin in (Union, types.UnionType):
        inner = next(arg for arg in args if arg is not type(None))
        return None if value is None else _value(inner, value, what, name)
    if dataclasses.is_dataclass(hint):
        return _decode(hint, value)  # type: ignore[arg-type]
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            choices = [item.value for item in hint]
            raise ValueError(f"{what}: {name} must be one of {choices}, not {value!r}") from None
    return hint(value)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    return value


def _check_keys(what: str, data: Any, required: set[str], optional: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected a mapping, got {type(data).__name__}")
    missing = required - data.keys()
    unknown = data.keys() - required - optional
    if missing:
        raise ValueError(f"{what}: missing {sorted(missing)}")
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}")
