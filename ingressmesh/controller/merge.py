"""Swarm state (from a manager) + node reports (from agents) → one validated Cluster.  Pure.

The manager knows services, VIPs and task addresses; only each node knows its containers'
health and its load-balancer endpoint addresses, and a node's claim of such an address is
checked against the manager's view first (lb_claims.py: refused by name, never at the cost of a
VIP, a task or another node).  A task a node reports as stopping counts as
no longer desired, so it drains at once instead of when the manager's state catches up (~12 s
after an unhealthy event).  Anything the snapshot checks refuse is dropped by name, never the
whole cluster.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Optional

from .. import model, snapshot
from ..swarm.state import SwarmState
from .lb_claims import Claims, judge

_CULPRIT = re.compile(r"^(nodes|networks|services|tasks)\[(\d+)\](?:\.lb_addresses\[(\d+)\])?")
MAX_DROPS = 1000


@dataclass
class SinceTracker:
    """When each task's (desired, current, health) last changed, on the controller's clock."""
    seen: dict = field(default_factory=dict)  # task id -> (key, since)

    def since(self, task_id: str, key: tuple, now: float) -> float:
        known = self.seen.get(task_id)
        if known is None or known[0] != key:
            self.seen[task_id] = (key, now)
            return now
        return known[1]

    def keep_only(self, task_ids: set) -> None:
        for task_id in set(self.seen) - task_ids:
            del self.seen[task_id]


@dataclass(frozen=True)
class Merged:
    cluster: model.Cluster
    refused: tuple[str, ...]  # every object left out, each message naming it


def _task(task: model.Task, state: SwarmState, reports: dict, tracker: SinceTracker, now: float) -> model.Task:
    report = reports.get(task.node_id)
    entry = ((report or {}).get("containers") or {}).get(task.id)
    if entry is not None:
        health = entry.get("health", "none")
    elif task.service_id not in state.health_checked:
        health = "none"
    elif report is None:
        # A silent node (its agent stopped, or this controller is fresh): Swarm lists a task
        # with a health check as running only once it was healthy, so it stays healthy until
        # its node says otherwise — a silent agent must not take healthy tasks out everywhere.
        health = "healthy"
    else:
        health = "starting"  # its node reports, just not this container yet: it earns traffic first
    desired = "shutdown" if entry is not None and entry.get("stopping") else task.desired_state
    since = tracker.since(task.id, (desired, task.current_state, health), now)
    return dataclasses.replace(task, health=health, desired_state=desired, since=since)


def _name(cluster: model.Cluster, kind: str, index: int) -> str:
    item = getattr(cluster, kind)[index]
    label = {"nodes": "node", "networks": "network", "services": "service", "tasks": "task"}[kind]
    return f"{label} {getattr(item, 'name', None) or getattr(item, 'hostname', None) or item.id!r}"


def _drop(cluster: model.Cluster, message: str) -> Optional[tuple[model.Cluster, str]]:
    """Remove the object an error names; None when the message names nothing removable."""
    found = _CULPRIT.match(message)
    if not found:
        return None
    kind, index, lb_index = found.group(1), int(found.group(2)), found.group(3)
    who = _name(cluster, kind, index)
    if kind == "networks" and lb_index is not None:
        network = cluster.networks[index]
        kept = tuple(a for i, a in enumerate(network.lb_addresses) if i != int(lb_index))
        networks = list(cluster.networks)
        networks[index] = dataclasses.replace(network, lb_addresses=kept)
        return dataclasses.replace(cluster, networks=tuple(networks)), f"{who}: {message}"
    items = tuple(x for i, x in enumerate(getattr(cluster, kind)) if i != index)
    cluster = dataclasses.replace(cluster, **{kind: items})
    if kind == "services":
        kept_ids = {s.id for s in cluster.services}
        cluster = dataclasses.replace(cluster, tasks=tuple(t for t in cluster.tasks if t.service_id in kept_ids))
    return cluster, f"{who}: {message}"


def validated(cluster: model.Cluster) -> Merged:
    """The largest part of `cluster` the snapshot checks accept, dropping culprits one by one."""
    refused = []
    for _ in range(MAX_DROPS):
        try:
            # Every object was checked on its own (provider, report validation): only the
            # cross-object checks remain, run on the model directly.
            return Merged(snapshot.check_cluster(cluster), tuple(refused))
        except snapshot.SnapshotError as err:
            dropped = _drop(cluster, str(err))
            if dropped is None:
                raise
            cluster, reason = dropped
            refused.append(reason)
    raise snapshot.SnapshotError(f"more than {MAX_DROPS} objects refused")


def merge(state: SwarmState, reports: dict, tracker: SinceTracker, now: float,
          claims: Optional[Claims] = None) -> Merged:
    """`claims`: judge(state, reports) when the caller has it already."""
    claims = judge(state, reports) if claims is None else claims
    networks = tuple(dataclasses.replace(n, lb_addresses=claims.accepted.get(n.id, ())) for n in state.networks)
    # Only running tasks can be backends; dead ones in the history would only add noise.
    # The tasks of a service the provider refused go with it (the refusal already names it).
    services = {s.id for s in state.services}
    tasks = tuple(_task(t, state, reports, tracker, now) for t in state.tasks
                  if t.current_state == "running" and t.service_id in services)
    tracker.keep_only({t.id for t in tasks})
    merged = validated(model.Cluster(nodes=state.nodes, networks=networks, services=state.services, tasks=tasks))
    return Merged(merged.cluster, state.errors + claims.refused + merged.refused)
