"""The gateway's side of agents' tunnels as the IR checks it: the server name that picks the tunnels'
filter chain on a shared HTTPS port is one exact, valid name, outside every agent name."""

from __future__ import annotations

import dataclasses

import pytest

from gatehouse.agent_tunnels import agent_name, gateway_agent_suffix, tunnel_server_name
from gateway_xds.ir.agent_tunnels import AgentTunnels, validate_agent_tunnels

PEM = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
TUNNELS = AgentTunnels(
    "127.0.0.1", 8444, gateway_agent_suffix("gw-1"), tunnel_server_name("gw-1"), PEM, PEM, PEM
)


def test_the_tunnels_server_name_is_the_parent_of_the_gateways_agent_names() -> None:
    assert validate_agent_tunnels(TUNNELS) == []
    assert tunnel_server_name("gw-1") == "gw-1.agents.gatehouse"
    assert agent_name("svc-1", "gw-1").endswith("." + tunnel_server_name("gw-1"))
    # No agent's certificate names it: it is one label short of every agent name.
    assert not tunnel_server_name("gw-1").endswith(TUNNELS.agent_suffix)


@pytest.mark.parametrize("server_name", ["", "*.gw-1.agents.gatehouse", "GW-1.agents.gatehouse", "a b"])
def test_a_server_name_that_is_not_one_exact_name_is_refused(server_name: str) -> None:
    errors = validate_agent_tunnels(dataclasses.replace(TUNNELS, server_name=server_name))
    assert errors == [
        f"agent tunnels 'agent-tunnels': {server_name!r} is not a server name (one lower-case DNS name)"
    ]
