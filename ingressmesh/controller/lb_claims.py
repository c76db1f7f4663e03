"""Which load-balancer addresses the nodes' reports may claim.  Pure.

A node's report names, per network, the address of that node's load-balancer endpoint: only the
node knows it.  Taken on trust, a node credential could claim another service's VIP or another
node's task address, and the snapshot's address checks would then drop whichever object already
held it — a service gone from every node.  So a report speaks only about its own node, and a
claim is accepted only when:

- the network is one the manager lists, and the manager's own view gives that node an endpoint
  on it: every node has one on the ingress network; on another overlay network Docker creates a
  node's endpoint exactly while a task of that node is attached to it (a service task, or the
  attachment of a standalone container on an attachable network), which the manager's task list
  says (SwarmState.attachments, and each task's addresses);
- the address lies in the network's subnet;
- no VIP and no task that still holds its address has it (tasks in any state short of dead,
  not only running ones);
- no other node claimed it first: the claim the controller accepted earlier keeps the address
  (claimed_at, stamped on arrival by `stamp`); claims made at the same moment are all refused.

A refused claim is named (node, network, address, why); nothing else is touched.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Optional

from .. import model
from ..swarm.state import SwarmState

CLAIMED_AT = "lb_claimed_at"  # report key: network id -> when this node first claimed that address


@dataclass(frozen=True)
class Claims:
    accepted: dict = field(default_factory=dict)  # network id -> (NodeAddress, ...) in node order
    refused: tuple[str, ...] = ()
    refused_nodes: tuple[str, ...] = ()  # the node id of each refusal, in the same order


def stamp(report: dict, previous: Optional[dict], now: float) -> dict:
    """`report` with CLAIMED_AT: the previous report's time for an address it already claimed,
    `now` for a new one.  The controller calls it on each accepted report."""
    before = (previous or {}).get("lb_addresses") or {}
    before_at = (previous or {}).get(CLAIMED_AT) or {}
    claimed = {net: (before_at.get(net, now) if before.get(net) == address else now)
               for net, address in (report.get("lb_addresses") or {}).items()}
    return {**report, CLAIMED_AT: claimed}


def _holds(task: model.Task) -> bool:
    """Swarm frees a task's addresses once both its desired and current state are past running."""
    past = model.TASK_STATES.index("running")
    return not (model.TASK_STATES.index(task.desired_state) > past
                and model.TASK_STATES.index(task.current_state) > past)


def judge(state: SwarmState, reports: dict) -> Claims:
    """The accepted claims per network and the refusals, from the manager's state and the reports."""
    networks = {n.id: n for n in state.networks}
    claims = []  # (network id, address, node id, claimed at)
    refused = []  # (node id, message)
    for node in state.nodes:
        report = reports.get(node.id) or {}
        stamps = report.get(CLAIMED_AT) or {}
        for network_id, address in sorted((report.get("lb_addresses") or {}).items()):
            network = networks.get(network_id)
            if network is None:
                continue  # a network the manager does not list (gone, or not read yet): nothing to claim
            problem = _shape(network, address)
            if problem:
                refused.append((node.id, _refusal(node, network, address, problem)))
            else:
                claims.append((network_id, address, node.id, stamps.get(network_id, math.inf)))
    if not claims:
        return Claims({}, tuple(text for _, text in refused), tuple(who for who, _ in refused))
    wanted = {(c[0], c[1]) for c in claims}
    claiming = {c[2] for c in claims}
    held: dict = {}  # (network, address) -> who holds it
    for service in state.services:
        for vip in service.vips:
            if (vip.network_id, vip.address) in wanted:
                held[(vip.network_id, vip.address)] = f"it is the VIP of service {service.name!r}"
    attached = set(state.attachments)
    for task in state.tasks:
        if not _holds(task):
            continue
        for addr in task.addresses:
            if task.node_id in claiming:
                attached.add((task.node_id, addr.network_id))
            key = (addr.network_id, addr.address)
            if key in wanted and key not in held:
                held[key] = f"it is the address of task {task.id!r} on node {task.node_id!r}"
    nodes = {n.id: n for n in state.nodes}
    valid = []
    for network_id, address, node_id, at in claims:
        network, node = networks[network_id], nodes[node_id]
        if not network.ingress and (node_id, network_id) not in attached:
            refused.append((node_id, _refusal(node, network, address, "the manager knows no task of this node on that "
                                                            "network, so it has no load-balancer endpoint there")))
        elif (network_id, address) in held:
            refused.append((node_id, _refusal(node, network, address, held[(network_id, address)])))
        else:
            valid.append((network_id, address, node_id, at))
    by_key: dict = {}  # (network, address) -> [(claimed at, node id)] of the claims still standing
    for network_id, address, node_id, at in valid:
        by_key.setdefault((network_id, address), []).append((at, node_id))
    winners: dict = {}
    for network_id, address, node_id, at in valid:
        rivals = by_key[(network_id, address)]
        earliest = min(rivals)[0]
        if at == earliest and sum(1 for when, _ in rivals if when == at) == 1:
            winners[(network_id, node_id)] = address
            continue
        others = ", ".join(repr(who) for _, who in sorted(rivals) if who != node_id)
        refused.append((node_id, _refusal(nodes[node_id], networks[network_id], address,
                                          f"node {others} claimed it {'first' if at > earliest else 'at the same time'}")))
    accepted: dict = {}
    for node in state.nodes:  # node order, as the merge always had it
        for network_id in sorted({n for n, who in winners if who == node.id}):
            accepted.setdefault(network_id, []).append(model.NodeAddress(node.id, winners[(network_id, node.id)]))
    return Claims({k: tuple(v) for k, v in accepted.items()}, tuple(text for _, text in refused),
                  tuple(who for who, _ in refused))


def _shape(network: model.Network, address) -> Optional[str]:
    try:
        parsed = ipaddress.IPv4Address(address)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        return "not an IPv4 address"
    if parsed not in ipaddress.IPv4Network(network.subnet):
        return f"not in the network's subnet {network.subnet}"
    return None


def _refusal(node: model.Node, network: model.Network, address, problem: str) -> str:
    shown = str(address)[:60]
    return (f"node {node.hostname!r} ({node.id}): load-balancer address {shown!r} on network {network.name!r} "
            f"refused: {problem}")
