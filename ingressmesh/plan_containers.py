"""The VIP fast path: each local container's own namespace DNATs the VIPs of its networks.

Docker (and the `lb` role) send a container's VIP packet to the network's load-balancer
namespace, which DNATs and SNATs it and sends it back over the same bridge: a second hop, and
the task never sees who called.  A `container` namespace plan holds the same VIP entries as the
LB namespaces of the container's networks (the very same objects: draining, refusals and
schedulers are decided once), and the backend DNATs them in the container's `output` hook at the
first packet, without SNAT; replies come straight back.  The LB namespace stays as it is: it is
the fallback for containers not programmed yet, and for services that opt out (label
`io.ingressmesh.lb.fast_path=false`).  Pure: the caller passes the containers it knows.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .plan import NamespacePlan, NodePlan, ip_sort_key


@dataclass(frozen=True)
class LocalContainer:
    """A container on this node and the overlay networks it is attached to."""
    id: str
    name: str
    network_ids: tuple[str, ...]


def plan_containers(plan: NodePlan, containers) -> NodePlan:
    """`plan` plus one `container` namespace per container attached to a network this node has
    an LB namespace plan for.  A container on a network whose LB namespace is held (a fact
    missing) is held too: its table stays as programmed, neither rewritten nor removed."""
    lb = {ns.network_id: ns for ns in plan.namespaces if ns.role == "lb"}
    held_lb = {key.removeprefix("lb:"): why for key, why in plan.held if key.startswith("lb:")}
    added, held = [], []
    shared: dict = {}  # networks -> their VIP entries: one tuple for every container on them
    for container in sorted(containers, key=lambda c: c.id):
        waiting = [held_lb[n] for n in container.network_ids if n in held_lb]
        if waiting:
            held.append((f"ctr:{container.id}", f"container {container.name}: {waiting[0]}"))
            continue
        if not any(network_id in lb for network_id in container.network_ids):
            continue
        networks = tuple(sorted({n for n in container.network_ids if n in lb}))
        if networks not in shared:
            entries = {e.vip: e for network_id in networks for e in lb[network_id].vips if e.fast_path}
            shared[networks] = tuple(sorted(entries.values(), key=lambda e: ip_sort_key(e.vip)))
        added.append(NamespacePlan(role="container", container_id=container.id, container_name=container.name,
                                   vips=shared[networks]))
    if not added and not held:
        return plan
    return dataclasses.replace(plan, namespaces=plan.namespaces + tuple(added), held=plan.held + tuple(held))
