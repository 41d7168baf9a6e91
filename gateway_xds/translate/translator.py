"""GatewayIR -> xDS resources: a pure function composed of one translator per feature."""

from collections.abc import Callable

from gateway_xds.ir.gateway import GatewayIR
from gateway_xds.resources import Resources, empty_resources
from gateway_xds.translate.agent_tunnels import translate_agent_tunnels
from gateway_xds.translate.clusters import translate_clusters
from gateway_xds.translate.endpoints import translate_endpoints
from gateway_xds.translate.listeners import translate_listeners
from gateway_xds.translate.routes import translate_routes
from gateway_xds.translate.scoped_routes import translate_scoped_routes
from gateway_xds.translate.secrets import translate_secrets

FeatureTranslator = Callable[[GatewayIR], Resources]

FEATURES: tuple[tuple[str, FeatureTranslator], ...] = (
    ("listeners", translate_listeners),
    ("routes", translate_routes),
    ("scoped_routes", translate_scoped_routes),
    ("clusters", translate_clusters),
    ("endpoints", translate_endpoints),
    ("secrets", translate_secrets),
    ("agent_tunnels", translate_agent_tunnels),
)


def translate(ir: GatewayIR, features: tuple[tuple[str, FeatureTranslator], ...] = FEATURES) -> Resources:
    """Translate a valid IR (see GatewayIR.validate); every known type URL is present in the result."""
    out = empty_resources()
    for feature, translate_feature in features:
        for type_url, resources in translate_feature(ir).items():
            into = out.setdefault(type_url, {})
            clash = into.keys() & resources.keys()
            if clash:
                raise ValueError(f"feature {feature!r} redefines {type_url} resources {sorted(clash)}")
            into.update(resources)
    return out
