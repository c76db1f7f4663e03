"""Where each namespace role of a plan lives on this node.

Docker's names are the defaults: the host namespace is the agent's own, the ingress namespace
is `/run/docker/netns/ingress_sbox`, and a network's load balancer is
`/run/docker/netns/lb_<first 9 characters of the network id>`.  The lab and tests pass their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..netns import Netns
from ..plan import NamespacePlan


@dataclass(frozen=True)
class Layout:
    host: str = ""
    ingress: str = "/run/docker/netns/ingress_sbox"
    # A format string; fields: network_id, network_name.  `{network_id:.9}` keeps 9 characters.
    lb: str = "/run/docker/netns/lb_{network_id:.9}"
    # Container id -> its namespace (Docker: the sandbox key, /run/docker/netns/<sandbox id>).
    containers: Mapping[str, str] = field(default_factory=dict)

    def netns_for(self, plan: NamespacePlan) -> Netns:
        if plan.role == "host":
            return Netns.from_ref(self.host)
        if plan.role == "ingress":
            return Netns.from_ref(self.ingress)
        if plan.role == "container":
            path = self.containers.get(plan.container_id)
            if not path:
                raise ValueError(f"container {plan.container_name or plan.container_id}: its namespace is not known")
            return Netns.from_ref(path)
        return Netns.from_ref(self.lb.format(network_id=plan.network_id, network_name=plan.network_name))
