"""The planner: a pure function from (Cluster, node id, options) to that node's desired data plane.

No I/O and no clock: the caller passes `now`.  The output is sorted and made of frozen
dataclasses, so two calls with the same input give equal plans and `to_dict` is stable JSON.

Per node there is one NamespacePlan per namespace role:
  host     published ports (ingress mode) -> DNAT to this node's ingress namespace
  ingress  published port -> the service's tasks on the ingress network (target port), SNAT
  lb       one per overlay network with a local task: VIP (all ports) -> tasks on that network, SNAT
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from . import model

ACTIVE = "active"
DRAINING = "draining"


@dataclass(frozen=True)
class PlanOptions:
    now: float = 0.0
    # How long an ineligible but still-running task keeps its established connections.
    drain_grace: float = 10.0
    # The ingress namespace's address as seen from the host namespace (Docker: docker_gwbridge).
    ingress_gateway: str = "172.18.0.2"


@dataclass(frozen=True)
class Backend:
    task_id: str
    address: str
    port: int  # 0 for a VIP backend: the client's destination port is kept
    state: str  # ACTIVE or DRAINING


@dataclass(frozen=True)
class VipEntry:
    service: str
    vip: str
    backends: tuple[Backend, ...]

    def active(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if b.state == ACTIVE)


@dataclass(frozen=True)
class PortEntry:
    service: str
    protocol: str
    port: int
    backends: tuple[Backend, ...] = ()

    def active(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if b.state == ACTIVE)


@dataclass(frozen=True)
class NamespacePlan:
    role: str  # "host", "ingress" or "lb"
    network_id: str = ""
    network_name: str = ""
    snat_address: str = ""  # ingress/lb: source address used towards tasks
    forward_to: str = ""  # host: the ingress namespace's gateway address
    vips: tuple[VipEntry, ...] = ()
    ports: tuple[PortEntry, ...] = ()

    @property
    def key(self) -> str:
        return f"lb:{self.network_id}" if self.role == "lb" else self.role


@dataclass(frozen=True)
class NodePlan:
    node_id: str
    namespaces: tuple[NamespacePlan, ...]
    warnings: tuple[str, ...] = ()

    def namespace(self, key: str) -> Optional[NamespacePlan]:
        return next((ns for ns in self.namespaces if ns.key == key), None)


def task_state(task: model.Task, cluster: model.Cluster, options: PlanOptions) -> Optional[str]:
    """ACTIVE, DRAINING or None (not a backend at all) for one task."""
    node = cluster.node(task.node_id)
    if node is None or node.state != "ready" or task.current_state != "running":
        return None
    if task.health == "starting":
        return None  # never served, so nothing to drain
    if task.desired_state == "running" and task.health in ("none", "healthy"):
        return ACTIVE
    if options.now - task.since < options.drain_grace:
        return DRAINING
    return None


def _backends(tasks: list[model.Task], network_id: str, port: int,
              states: dict[str, Optional[str]]) -> tuple[Backend, ...]:
    found = []
    for task in tasks:
        address = task.address_on(network_id)
        if address and states[task.id]:
            found.append(Backend(task.id, address, port, states[task.id]))
    return tuple(sorted(found, key=lambda b: (_ip_key(b.address), b.port, b.task_id)))


def _ip_key(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split("."))


def _ingress_plans(cluster: model.Cluster, node_id: str, options: PlanOptions,
                   tasks_by_service: dict, states: dict, warnings: list) -> tuple[NamespacePlan, ...]:
    ingress = cluster.ingress_network()
    published = [(svc, port) for svc in cluster.services for port in svc.ports
                 if port.publish_mode == "ingress"]
    if ingress is None:
        if published:
            warnings.append("no ingress network in the cluster: published ports are not routed")
        return ()
    snat = ingress.lb_address(node_id)
    if snat is None:
        warnings.append(f"network {ingress.name}: no ingress address for node {node_id}; "
                        "published ports are not routed on this node")
        return ()
    entries = sorted(
        (PortEntry(svc.name, port.protocol, port.published_port,
                   _backends(tasks_by_service.get(svc.id, []), ingress.id, port.target_port, states))
         for svc, port in published), key=lambda e: (e.protocol, e.port))
    host = NamespacePlan(role="host", forward_to=options.ingress_gateway,
                         ports=tuple(dataclasses.replace(e, backends=()) for e in entries))
    return (host, NamespacePlan(role="ingress", network_id=ingress.id, network_name=ingress.name,
                                snat_address=snat, ports=tuple(entries)))


def _lb_plans(cluster: model.Cluster, node_id: str, tasks_by_service: dict, states: dict,
              warnings: list) -> tuple[NamespacePlan, ...]:
    local_networks = {addr.network_id for task in cluster.tasks
                      if task.node_id == node_id and task.desired_state == "running"
                      for addr in task.addresses}
    plans = []
    for network in sorted(cluster.networks, key=lambda n: n.id):
        if network.ingress or network.id not in local_networks:
            continue
        snat = network.lb_address(node_id)
        if snat is None:
            warnings.append(f"network {network.name}: no load-balancer address for node {node_id}; "
                            "its VIPs are not routed on this node")
            continue
        vips = sorted(
            (VipEntry(svc.name, vip, _backends(tasks_by_service.get(svc.id, []), network.id, 0, states))
             for svc in cluster.services if svc.endpoint_mode == "vip"
             for vip in [svc.vip_on(network.id)] if vip), key=lambda e: _ip_key(e.vip))
        plans.append(NamespacePlan(role="lb", network_id=network.id, network_name=network.name,
                                   snat_address=snat, vips=tuple(vips)))
    return tuple(plans)


def plan_node(cluster: model.Cluster, node_id: str, options: PlanOptions = PlanOptions()) -> NodePlan:
    """The desired data plane of one node."""
    states = {task.id: task_state(task, cluster, options) for task in cluster.tasks}
    tasks_by_service: dict[str, list[model.Task]] = {}
    for task in cluster.tasks:
        tasks_by_service.setdefault(task.service_id, []).append(task)
    warnings: list[str] = []
    if cluster.node(node_id) is None:
        warnings.append(f"node {node_id} is not in the cluster")
    namespaces = _ingress_plans(cluster, node_id, options, tasks_by_service, states, warnings)
    namespaces += _lb_plans(cluster, node_id, tasks_by_service, states, warnings)
    return NodePlan(node_id=node_id, namespaces=namespaces, warnings=tuple(warnings))


def to_dict(plan: NodePlan) -> dict:
    data = dataclasses.asdict(plan)
    for ns, ns_plan in zip(data["namespaces"], plan.namespaces):
        ns["key"] = ns_plan.key
    return data
