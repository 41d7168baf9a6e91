"""Gatehouse's own replica runners, as replicas name them (`runner`): the provisioner's local runner
and the tunnel that registers `gatehouse agent`s. Any other name is a runner of someone else's."""

LOCAL = "local"
AGENT = "agent"
OWN = (LOCAL, AGENT)


def probed_by_provisioner(runner: str) -> bool:
    """Whether the provisioner probes a replica of a service with `probes` and decides from it that
    it takes traffic: those run by others. The local runner registers its replicas ready only while
    they pass; an agent's replica is behind NAT, out of the provisioner's reach."""
    return runner not in OWN
