"""The client's own address through the routing mesh (issue 21, moby#25526): pure plan.

Docker SNATs every published-port connection in the ingress namespace, because the task's reply
must go back through the node that received it (its conntrack holds the DNAT) while the task's
default route is its own node's `docker_gwbridge`.  A service labelled
`io.ingressmesh.lb.source_ip=preserve` is not SNATed (its ingress `PortEntry.keep_source`), and
each of its tasks on this node gets a `TaskReplyRoutes`: in the task's namespace a connection
arriving on the ingress interface is marked, in conntrack, with the node whose ingress namespace
sent it — told by the frame's source MAC, which Docker derives from the endpoint's address
(02:42 + the IPv4 address; it survives the VXLAN hop) — and the replies of marked connections
are routed back to that node's ingress address (one `ip rule fwmark` and one table per node, the
mark being the address itself: no per-node limit, no allocation to remember).  Applied by
dataplane/reply_routes.py.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Mapping

from . import model

SOURCE_IP_LABEL = "io.ingressmesh.lb.source_ip"
PRESERVE, SNAT = "preserve", "snat"


def source_ip_of(service: model.Service, default: str = SNAT) -> tuple[bool, tuple[str, ...]]:
    """Whether the service's published ports keep the client's address, and any warning.  A bad
    value is named with its service and keeps `default` (the agent-wide choice), so one typo
    never changes how the service is reached."""
    value = dict(service.labels).get(SOURCE_IP_LABEL)
    if value is None:
        return default == PRESERVE, ()
    if value.strip().lower() in (PRESERVE, SNAT):
        return value.strip().lower() == PRESERVE, ()
    shown = value if len(value) <= 40 else value[:37] + "..."
    return default == PRESERVE, (f"service {service.name}: label {SOURCE_IP_LABEL}={shown!r} is not "
                                 f"{PRESERVE} or {SNAT}; using {default}",)


def docker_overlay_mac(address: str) -> str:
    """The MAC Docker's overlay driver gives an endpoint: 02:42 followed by its IPv4 address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def mark_of(address: str) -> int:
    """The conntrack mark (and routing table) naming one node's ingress namespace: its address."""
    return int(ipaddress.IPv4Address(address))


@dataclass(frozen=True)
class IngressPeer:
    """One node's ingress namespace as a task sees it on the ingress network."""
    node_id: str
    address: str
    mac: str
    mark: int


@dataclass(frozen=True)
class TaskReplyRoutes:
    """What one local task of a source-keeping service needs in its own namespace."""
    container_id: str
    task_id: str
    service: str
    address: str  # the task's address on the ingress network: finds the interface
    peers: tuple[IngressPeer, ...]
    udp_ports: tuple[int, ...] = ()  # target ports of its published UDP ports (reply_routes.py)


def ingress_peers(cluster: model.Cluster) -> tuple[IngressPeer, ...]:
    """Every node's ingress namespace, sorted by node id (the same tuple for every task)."""
    network = cluster.ingress_network()
    if network is None:
        return ()
    return tuple(IngressPeer(a.node_id, a.address, docker_overlay_mac(a.address), mark_of(a.address))
                 for a in sorted(network.lb_addresses, key=lambda a: a.node_id))


def plan_reply_routes(cluster: model.Cluster, node_id: str, containers: Mapping[str, str],
                      default: str = SNAT) -> tuple[TaskReplyRoutes, ...]:
    """One TaskReplyRoutes per running task on `node_id` whose service keeps source addresses
    and publishes a port in ingress mode.  `containers` maps task id -> container id (only this
    node's dockerd knows it); a task without a known container is left out until it is known."""
    network = cluster.ingress_network()
    if network is None:
        return ()
    keeping = {s.id: s for s in cluster.services
               if source_ip_of(s, default)[0] and any(p.publish_mode == "ingress" for p in s.ports)}
    peers = ingress_peers(cluster)
    out = []
    for task in cluster.tasks:
        service = keeping.get(task.service_id)
        address = task.address_on(network.id)
        if (service is None or task.node_id != node_id or task.desired_state != "running"
                or not address or task.id not in containers):
            continue
        udp = tuple(sorted({p.target_port for p in service.ports if p.protocol == "udp" and p.publish_mode == "ingress"}))
        out.append(TaskReplyRoutes(containers[task.id], task.id, service.name, address, peers, udp))
    return tuple(sorted(out, key=lambda r: r.container_id))
