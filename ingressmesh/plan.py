"""The planner: a pure function from (Cluster, node id, options) to that node's desired data plane.

No I/O and no clock: the caller passes `now`.  The output is sorted and made of frozen
dataclasses, so two calls with the same input give equal plans and `to_dict` is stable JSON.

Per node there is one NamespacePlan per namespace role:
  host     published ports (ingress mode) -> DNAT to this node's ingress namespace
  ingress  published port -> the service's tasks on the ingress network (target port), SNAT
           unless the service keeps the client's address (plan_source_ip.py)
  lb       one per overlay network with a local task or LB endpoint: VIP (all ports) -> tasks, SNAT
  container  (plan_containers.py, from this node's own containers) the VIPs of a container's
           networks DNATed in its own namespace: no LB hop, no SNAT
"""
from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional

from . import model
from .plan_source_ip import source_ip_of

ACTIVE = "active"
DRAINING = "draining"


@dataclass(frozen=True)
class PlanOptions:
    now: float = 0.0
    # How long an ineligible but still-running task keeps its established connections.
    drain_grace: float = 10.0
    # The ingress namespace's address as seen from the host namespace (Docker: docker_gwbridge).
    ingress_gateway: str = "172.18.0.2"
    # Agent-wide default of label io.ingressmesh.lb.source_ip ("snat" or "preserve").
    source_ip: str = "snat"


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
    scheduler: str = "rr"  # IPVS scheduler; the nft backend always picks at random
    fast_path: bool = True  # also DNATed in callers' own namespaces (plan_containers.py)
    panic: bool = False  # no healthy task: the running ones serve (serving_states)

    def active(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if b.state == ACTIVE)


@dataclass(frozen=True)
class PortEntry:
    service: str
    protocol: str
    port: int
    backends: tuple[Backend, ...] = ()
    scheduler: str = "rr"
    panic: bool = False  # no healthy task: the running ones serve (serving_states)
    keep_source: bool = False  # ingress: not SNATed, tasks see the client (plan_source_ip.py)

    def active(self) -> tuple[Backend, ...]:
        return tuple(b for b in self.backends if b.state == ACTIVE)


@dataclass(frozen=True)
class NamespacePlan:
    role: str  # "host", "ingress", "lb" or "container"
    network_id: str = ""
    network_name: str = ""
    snat_address: str = ""  # ingress/lb: source address used towards tasks
    forward_to: str = ""  # host: the ingress namespace's gateway address
    vips: tuple[VipEntry, ...] = ()
    ports: tuple[PortEntry, ...] = ()
    container_id: str = ""  # container: whose namespace (plan_containers.py)
    container_name: str = ""

    @property
    def key(self) -> str:
        if self.role == "lb":
            return f"lb:{self.network_id}"
        return f"ctr:{self.container_id}" if self.role == "container" else self.role


@dataclass(frozen=True)
class NodePlan:
    node_id: str
    namespaces: tuple[NamespacePlan, ...]
    warnings: tuple[str, ...] = ()
    # Namespace keys whose facts are missing from the snapshot (this node's ingress or LB
    # address): what is programmed there stays as it is — neither rewritten nor removed.
    held: tuple[tuple[str, str], ...] = ()  # (namespace key, why)

    def namespace(self, key: str) -> Optional[NamespacePlan]:
        return next((ns for ns in self.namespaces if ns.key == key), None)


@dataclass(frozen=True)
class NodeContext:
    """What every service's plan on one node shares; derived once per cluster topology."""
    node_id: str
    options: PlanOptions
    node_states: Mapping[str, str]  # node id -> state, to tell tasks on dead nodes (read-only)
    ingress: Optional[model.Network]  # None: published ports are not routed on this node
    ingress_snat: str
    lb_networks: tuple[tuple[model.Network, str], ...]  # (network, this node's LB address)
    warnings: tuple[str, ...] = ()
    held: tuple[tuple[str, str], ...] = ()  # see NodePlan.held


@dataclass(frozen=True)
class ServicePlan:
    """One service's share of a node plan; the unit an incremental planner recomputes."""
    host_ports: tuple[PortEntry, ...] = ()
    ports: tuple[PortEntry, ...] = ()
    vips: tuple[tuple[str, VipEntry], ...] = ()  # (network id, entry)
    warnings: tuple[str, ...] = ()  # about this service's labels

    @property
    def draining(self) -> bool:
        entries = self.ports + tuple(vip for _, vip in self.vips)
        return any(b.state == DRAINING for e in entries for b in e.backends)


def task_state(task: model.Task, node_state: Optional[str], options: PlanOptions) -> Optional[str]:
    """ACTIVE, DRAINING or None (not a backend at all) for one task.

    `options.now` only matters for DRAINING, and as it grows a task can only go from DRAINING
    to None: IncrementalPlanner.set_options relies on that to re-plan only draining services.
    """
    if node_state != "ready" or task.current_state != "running":
        return None
    if task.health == "starting":
        return None  # never served, so nothing to drain
    if task.desired_state == "running" and task.health in ("none", "healthy"):
        return ACTIVE
    if options.now - task.since < options.drain_grace:
        return DRAINING
    return None


PANIC_HEALTH = ("unhealthy", "starting")  # health states that serve only in panic mode


def serving_states(tasks, node_states: Mapping[str, str], options: PlanOptions) -> tuple[dict, bool]:
    """Each task's state (task_state), and whether the group is in panic mode.

    The one place that decides panic mode, for VIPs, published ports and L7 backends alike
    (Envoy's panic threshold at 0 %): when no task of the group is ACTIVE, every task that
    Swarm runs and wants running on a ready node gets traffic, whatever its health, so a
    health check failing everywhere at once (CPU pressure, a probe that cannot start) never
    takes the whole service down.  A task Swarm itself still lists as `starting` (its first
    check has not passed: Docker sends it nothing) is not running and stays out.
    """
    states = {t.id: task_state(t, node_states.get(t.node_id), options) for t in tasks}
    if any(state == ACTIVE for state in states.values()):
        return states, False
    rescued = [t.id for t in tasks if node_states.get(t.node_id) == "ready" and t.current_state == "running"
               and t.desired_state == "running" and t.health in PANIC_HEALTH]
    states.update((task_id, ACTIVE) for task_id in rescued)
    return states, bool(rescued)


def panic_warning(what: str, tasks, states: dict) -> str:
    """The line `plan`, the agent's log and the proxies' notes show for a group in panic mode."""
    health = sorted({t.health for t in tasks if states.get(t.id) == ACTIVE})
    count = sum(1 for t in tasks if states.get(t.id) == ACTIVE)
    return (f"{what}: no healthy task; panic mode: routing to its {count} running task(s) "
            f"({', '.join(health)})")


def ip_sort_key(address: str) -> bytes:
    return socket.inet_aton(address)


def local_networks(cluster: model.Cluster, node_id: str) -> set[str]:
    """Networks on which this node runs a task: the ones that get an LB namespace here."""
    return {addr.network_id for task in cluster.tasks
            if task.node_id == node_id and task.desired_state == "running" for addr in task.addresses}


def node_context(cluster: model.Cluster, node_id: str, options: PlanOptions,
                 local: Optional[set[str]] = None) -> NodeContext:
    local = local_networks(cluster, node_id) if local is None else local
    warnings: list[str] = []
    held: list[tuple[str, str]] = []
    if cluster.node(node_id) is None:
        warnings.append(f"node {node_id} is not in the cluster")
    ingress, ingress_snat = cluster.ingress_network(), ""
    if ingress is None:
        if any(p.publish_mode == "ingress" for svc in cluster.services for p in svc.ports):
            warnings.append("no ingress network in the cluster: published ports are not routed")
    elif ingress.lb_address(node_id) is None:
        # A missing fact (a lost report, the ingress network re-created), not a removal: keep
        # what the host and ingress namespaces have until the address is known again.
        why = f"network {ingress.name}: no ingress address for node {node_id} in the snapshot; kept as programmed"
        held += [("host", why), ("ingress", why)]
        ingress = None
    else:
        ingress_snat = ingress.lb_address(node_id)
    lb_networks = []
    for network in sorted(cluster.networks, key=lambda n: n.id):
        snat = network.lb_address(node_id)
        # A network gets an LB namespace here when a task of ours uses it, or when this node
        # already has an LB endpoint on it (Docker makes one for any container on the network,
        # e.g. `docker run --network` on an attachable overlay, which also reaches VIPs).
        if network.ingress or (network.id not in local and snat is None):
            continue
        if snat is None:
            held.append((f"lb:{network.id}", f"network {network.name}: no load-balancer address for node "
                                             f"{node_id} in the snapshot; kept as programmed"))
            continue
        lb_networks.append((network, snat))
    return NodeContext(node_id=node_id, options=options,
                       node_states=MappingProxyType({n.id: n.state for n in cluster.nodes}),
                       ingress=ingress, ingress_snat=ingress_snat, lb_networks=tuple(lb_networks),
                       warnings=tuple(warnings), held=tuple(held))


def _backends(tasks, states: dict, network_id: str, port: int) -> tuple[Backend, ...]:
    found = []
    for task in tasks:
        state = states[task.id]
        address = task.address_on(network_id) if state else None
        if address:
            found.append(Backend(task.id, address, port, state))
    found.sort(key=lambda b: (ip_sort_key(b.address), b.port, b.task_id))
    return tuple(found)


SCHEDULER_LABEL = "io.ingressmesh.lb.scheduler"
SCHEDULERS = ("rr", "wrr", "lc", "sh", "mh")  # round robin, weighted rr, least conn, source hash, Maglev


def scheduler_of(service: model.Service) -> tuple[str, tuple[str, ...]]:
    """The service's load-balancing scheduler and any warning: a bad label value is named with
    its service and falls back to round robin, so one typo never takes a service down."""
    value = dict(service.labels).get(SCHEDULER_LABEL)
    if value is None:
        return "rr", ()
    if value.strip().lower() in SCHEDULERS:
        return value.strip().lower(), ()
    shown = value if len(value) <= 40 else value[:37] + "..."
    return "rr", (f"service {service.name}: label {SCHEDULER_LABEL}={shown!r} is not one of "
                  f"{', '.join(SCHEDULERS)}; using rr",)


FAST_PATH_LABEL = "io.ingressmesh.lb.fast_path"


def fast_path_of(service: model.Service) -> tuple[bool, tuple[str, ...]]:
    """Whether callers' own namespaces DNAT the service's VIPs (the default), from the label;
    a bad value is named and keeps the default."""
    value = dict(service.labels).get(FAST_PATH_LABEL)
    if value is None or value.strip().lower() in ("true", "1", "yes", "on"):
        return True, ()
    if value.strip().lower() in ("false", "0", "no", "off"):
        return False, ()
    shown = value if len(value) <= 40 else value[:37] + "..."
    return True, (f"service {service.name}: label {FAST_PATH_LABEL}={shown!r} is not true or false; using true",)


def plan_service(ctx: NodeContext, service: model.Service, tasks) -> ServicePlan:
    """The entries one service contributes to this node's namespaces."""
    scheduler, warnings = scheduler_of(service)
    fast_path, fast_path_warnings = fast_path_of(service)
    keep_source, source_warnings = source_ip_of(service, ctx.options.source_ip)
    warnings += fast_path_warnings + source_warnings
    states, panic = serving_states(tasks, ctx.node_states, ctx.options)
    if panic:
        warnings += (panic_warning(f"service {service.name}", tasks, states),)
    ports, host_ports = [], []
    if ctx.ingress is not None:
        for port in service.ports:
            if port.publish_mode != "ingress":
                continue
            ports.append(PortEntry(service.name, port.protocol, port.published_port,
                                   _backends(tasks, states, ctx.ingress.id, port.target_port), scheduler, panic,
                                   keep_source=keep_source))
            host_ports.append(PortEntry(service.name, port.protocol, port.published_port))
    vips = []
    if service.endpoint_mode == "vip":
        for network, _ in ctx.lb_networks:
            vip = service.vip_on(network.id)
            if vip:
                vips.append((network.id, VipEntry(service.name, vip, _backends(tasks, states, network.id, 0),
                                                  scheduler, fast_path, panic)))
    return ServicePlan(tuple(host_ports), tuple(ports), tuple(vips), warnings)


def assemble(ctx: NodeContext, service_plans) -> NodePlan:
    """Gather service plans into the node's namespaces, sorted so the result is deterministic."""
    host, ingress, vips = [], [], {network.id: [] for network, _ in ctx.lb_networks}
    warnings = []
    for sp in service_plans:
        warnings += sp.warnings
        host += sp.host_ports
        ingress += sp.ports
        for network_id, entry in sp.vips:
            vips[network_id].append(entry)
    namespaces = []
    if ctx.ingress is not None:
        host.sort(key=lambda e: (e.protocol, e.port))
        ingress.sort(key=lambda e: (e.protocol, e.port))
        namespaces.append(NamespacePlan(role="host", forward_to=ctx.options.ingress_gateway, ports=tuple(host)))
        namespaces.append(NamespacePlan(role="ingress", network_id=ctx.ingress.id, network_name=ctx.ingress.name,
                                        snat_address=ctx.ingress_snat, ports=tuple(ingress)))
    for network, snat in ctx.lb_networks:
        entries = sorted(vips[network.id], key=lambda e: ip_sort_key(e.vip))
        namespaces.append(NamespacePlan(role="lb", network_id=network.id, network_name=network.name,
                                        snat_address=snat, vips=tuple(entries)))
    return NodePlan(node_id=ctx.node_id, namespaces=tuple(namespaces), warnings=ctx.warnings + tuple(sorted(warnings)),
                    held=ctx.held)


def tasks_by_service(cluster: model.Cluster) -> dict[str, list[model.Task]]:
    grouped: dict[str, list[model.Task]] = {}
    for task in cluster.tasks:
        grouped.setdefault(task.service_id, []).append(task)
    return grouped


def plan_node(cluster: model.Cluster, node_id: str, options: PlanOptions = PlanOptions()) -> NodePlan:
    """The desired data plane of one node."""
    ctx = node_context(cluster, node_id, options)
    grouped = tasks_by_service(cluster)
    return assemble(ctx, (plan_service(ctx, svc, grouped.get(svc.id, ())) for svc in cluster.services))


def to_dict(plan: NodePlan) -> dict:
    data = dataclasses.asdict(plan)
    for ns, ns_plan in zip(data["namespaces"], plan.namespaces):
        ns["key"] = ns_plan.key
    return data
