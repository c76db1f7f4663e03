"""Keep one node's plan current under small cluster changes by re-planning only what changed.

Re-planning 10,000 services × 10 tasks takes about a second in Python; one task changing
should cost one service.  This wraps the pure per-service functions of `plan.py` with a cache:
  - a task or service change re-plans that service;
  - a change that moves the shared context (the set of networks this node has tasks on, a
    warning that depends on the services) re-plans everything;
  - `now` moving forward re-plans only the services that have draining tasks; any other change
    of options (grace, ingress gateway, `now` stepping back) re-plans everything;
  - node and network changes are not tracked one by one: they go through `reset()`.
Unchanged services keep the very same entry objects, which lets backends skip them by identity.
`plan()` always equals `plan_node(cluster(), node_id, options)` (tested with random changes).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from . import model
from .plan import (NodeContext, NodePlan, PlanOptions, ServicePlan, VipEntry, assemble, node_context,
                   plan_service)


class IncrementalPlanner:
    def __init__(self, cluster: model.Cluster, node_id: str, options: PlanOptions = PlanOptions()):
        self.node_id = node_id
        self.reset(cluster, options)

    def reset(self, cluster: model.Cluster, options: Optional[PlanOptions] = None) -> None:
        """Start over from a whole cluster.  Node and network changes come in this way: they are
        rare, and each can move every service's entries (node states, LB addresses, subnets)."""
        self.options = options or self.options
        self.nodes = {n.id: n for n in cluster.nodes}
        self.networks = {n.id: n for n in cluster.networks}
        self.services = {s.id: s for s in cluster.services}
        self.tasks: dict[str, dict[str, model.Task]] = {sid: {} for sid in self.services}
        self.task_service: dict[str, str] = {}
        self.local_counts: dict[str, int] = {}  # network id -> local running tasks on it
        self._assembled: Optional[NodePlan] = None  # the last plan() result
        # (ns key, front-end) -> (namespace index, entry index); None when front-ends collide
        self._positions: Optional[dict[tuple, tuple[int, int]]] = None
        self._dirty: dict[str, Optional[ServicePlan]] = {}  # service id -> plan before the change
        for task in cluster.tasks:
            self._index(task, +1)
        self._replan_all()

    # --- the cluster as it is now ----------------------------------------------------------
    def cluster(self) -> model.Cluster:
        tasks = tuple(t for sid in self.services for t in self.tasks.get(sid, {}).values())
        orphans = tuple(t for sid, ts in self.tasks.items() if sid not in self.services for t in ts.values())
        return model.Cluster(nodes=tuple(self.nodes.values()), networks=tuple(self.networks.values()),
                             services=tuple(self.services.values()), tasks=tasks + orphans)

    def plan(self) -> NodePlan:
        """The node plan; between calls, only re-planned services' entries are swapped in."""
        if self._assembled is None or not self._swap_in_place():
            self._assembled = assemble(self.ctx, (self.plans[sid] for sid in self.services))
            self._positions = _positions(self._assembled)
        self._dirty.clear()
        return self._assembled

    def _swap_in_place(self) -> bool:
        """Put re-planned entries where their predecessors were in the last assembled plan.
        False when that is not possible (a front-end appeared, vanished or moved, or two
        services share a front-end so a position does not name one entry)."""
        if self._positions is None:
            return False
        swaps: dict[int, list] = {}
        for sid, old in self._dirty.items():
            new = self.plans.get(sid)
            if new is None or old is None or _fronts(old) != _fronts(new) or old.warnings != new.warnings:
                return False
            for ns_key, entry in _entries(new):
                index, position = self._positions[(ns_key, _front(entry))]
                swaps.setdefault(index, []).append((position, entry))
        namespaces = list(self._assembled.namespaces)
        for index, changes in swaps.items():
            ns = namespaces[index]
            entries = list(ns.vips if ns.role == "lb" else ns.ports)
            for position, entry in changes:
                entries[position] = entry
            field = "vips" if ns.role == "lb" else "ports"
            namespaces[index] = dataclasses.replace(ns, **{field: tuple(entries)})
        self._assembled = dataclasses.replace(self._assembled, namespaces=tuple(namespaces))
        return True

    # --- changes ---------------------------------------------------------------------------
    def set_task(self, task: model.Task) -> None:
        old_service = self.task_service.get(task.id)
        if old_service is not None:
            self._index(self.tasks[old_service][task.id], -1)
        self._index(task, +1)
        if not self._refresh_context(tasks_only=True):
            for sid in {old_service, task.service_id} - {None}:
                self._replan(sid)

    def remove_task(self, task_id: str) -> None:
        sid = self.task_service.get(task_id)
        if sid is None:
            return
        self._index(self.tasks[sid][task_id], -1)
        if not self._refresh_context(tasks_only=True):
            self._replan(sid)

    def set_service(self, service: model.Service) -> None:
        self.services[service.id] = service
        self.tasks.setdefault(service.id, {})
        if not self._refresh_context():  # a new port may add the "no ingress" warning
            self._replan(service.id)

    def remove_service(self, service_id: str) -> None:
        self.services.pop(service_id, None)
        self.plans.pop(service_id, None)
        self._draining.discard(service_id)
        self._assembled = None
        self._refresh_context()

    def set_options(self, options: PlanOptions) -> None:
        """New options.  As `now` moves forward a task's state can only go DRAINING -> gone (its
        grace runs out), never back, and ACTIVE does not depend on `now`: so only services with
        a draining backend can change.  Anything else (a longer grace revives ended drains, a new
        gateway changes the host namespace, a clock stepping back) re-plans everything."""
        forward_only = dataclasses.replace(options, now=self.options.now) == self.options \
            and options.now >= self.options.now
        self.options = options
        if not forward_only:
            self._replan_all()
            return
        self.ctx = dataclasses.replace(self.ctx, options=options)
        for sid in list(self._draining):
            self._replan(sid)

    # --- internals -------------------------------------------------------------------------
    def _index(self, task: model.Task, sign: int) -> None:
        if sign > 0:
            self.tasks.setdefault(task.service_id, {})[task.id] = task
            self.task_service[task.id] = task.service_id
        else:
            del self.tasks[task.service_id][task.id]
            del self.task_service[task.id]
        if task.node_id == self.node_id and task.desired_state == "running":
            for addr in task.addresses:
                self.local_counts[addr.network_id] = self.local_counts.get(addr.network_id, 0) + sign

    def _local(self) -> frozenset:
        return frozenset(nid for nid, count in self.local_counts.items() if count > 0)

    def _context(self) -> NodeContext:
        local = self._context_local = self._local()
        skeleton = model.Cluster(nodes=tuple(self.nodes.values()), networks=tuple(self.networks.values()),
                                 services=tuple(self.services.values()))
        return node_context(skeleton, self.node_id, self.options, local)

    def _refresh_context(self, tasks_only: bool = False) -> bool:
        """Recompute the shared context; if it changed, re-plan everything and say so.  After a
        task change only the networks this node has tasks on can move it: when they did not,
        the context (O(services) to build) is not rebuilt."""
        if tasks_only and self._local() == self._context_local:
            return False
        ctx = self._context()
        if ctx == self.ctx:
            return False
        self.ctx = ctx
        self._replan_all(ctx)
        return True

    def _replan_all(self, ctx: Optional[NodeContext] = None) -> None:
        self.ctx = ctx or self._context()
        self._assembled = None
        self.plans: dict[str, ServicePlan] = {}
        self._draining: set[str] = set()  # services with a draining backend: `now` moves them
        for sid in self.services:
            self._replan(sid)

    def _replan(self, service_id: str) -> None:
        service = self.services.get(service_id)
        if service is None:
            return
        old = self.plans.get(service_id)
        self.plans[service_id] = plan_service(self.ctx, service, tuple(self.tasks.get(service_id, {}).values()))
        if self.plans[service_id].draining:
            self._draining.add(service_id)
        else:
            self._draining.discard(service_id)
        self._dirty.setdefault(service_id, old)


def _front(entry) -> tuple:
    return (entry.vip,) if isinstance(entry, VipEntry) else (entry.protocol, entry.port)


def _entries(sp: ServicePlan) -> tuple:
    """A service plan's entries, each with the key of the namespace it goes to."""
    pairs = [("host", e) for e in sp.host_ports] + [("ingress", e) for e in sp.ports]
    return tuple(pairs + [(f"lb:{network_id}", e) for network_id, e in sp.vips])


def _fronts(sp: ServicePlan) -> tuple:
    """Where a service plan's entries sit: (namespace key, front-end) for each, in order."""
    return tuple((ns_key, _front(e)) for ns_key, e in _entries(sp))


def _positions(node_plan: NodePlan) -> Optional[dict[tuple, tuple[int, int]]]:
    """(namespace key, front-end) -> (namespace index, entry index) in `node_plan`, or None if
    two entries share a key (two services with one VIP): a key would then not name one entry,
    so `plan()` must assemble in full to stay equal to `plan_node`."""
    positions = {}
    for i, ns in enumerate(node_plan.namespaces):
        for n, entry in enumerate(ns.ports + ns.vips):
            key = (ns.key, _front(entry))
            if key in positions:
                return None
            positions[key] = (i, n)
    return positions
