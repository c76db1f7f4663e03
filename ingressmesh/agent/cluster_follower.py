"""The agent's view of the cluster, kept in step with successive snapshots at the cost of what
changed.

A snapshot is the whole swarm; between two of them a handful of services and tasks differ.
Those (found by comparing each object's plain form by id) are checked on their own and handed
to the incremental planner; everything else is left as it was.  Nodes or networks changing
(rare: an lb endpoint re-created, a node down) and the first snapshot take the full path:
`snapshot.from_dict` with every cross-object check.  The controller ran those checks on the
snapshot it sent, so the fast path only re-checks each changed object and its references.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from .. import model, snapshot
from ..arrival import ArrivalClock
from ..incremental import IncrementalPlanner
from ..plan import NodePlan, PlanOptions

_ITEMS = (("services", "service"), ("tasks", "task"))


def _by_id(items) -> dict:
    if not isinstance(items, list):
        raise snapshot.SnapshotError(f"expected a list, got {type(items).__name__}")
    return {item.get("id") if isinstance(item, dict) else None: item for item in items}


class ClusterFollower:
    def __init__(self, node_id: str, clock: Callable[[], float] = time.time):
        self.node_id = node_id
        self.arrival = ArrivalClock(clock)  # drain grace on this host's clock, not the controller's
        self.planner: Optional[IncrementalPlanner] = None
        self.raw: dict = {}  # kind -> {id: plain form} of the last snapshot taken
        self.full_syncs = 0
        self.changed_objects = 0

    def take(self, data: dict, options: PlanOptions) -> None:
        """Adopt snapshot `data`; raises SnapshotError (naming the culprit) and keeps the
        previous view when the snapshot is bad."""
        if not isinstance(data, dict):
            raise snapshot.SnapshotError("snapshot: expected an object")
        same_shape = (self.planner is not None and data.get("version") == self.raw.get("version")
                      and data.get("nodes") == self.raw.get("nodes") and data.get("networks") == self.raw.get("networks"))
        if not same_shape:
            self._full(data, options)
            return
        new = {kind: _by_id(data.get(kind, [])) for kind, _ in _ITEMS}
        sets, removals = [], []
        for kind, singular in _ITEMS:
            old = self.raw[kind]
            for item_id, item in new[kind].items():
                if old.get(item_id) != item:
                    value = snapshot.item_from_dict(singular, item, f"{kind}[{item_id!r}]")
                    sets.append(("set", singular, self.arrival.stamp(value) if singular == "task" else value))
            removals += [("remove", singular, item_id) for item_id in old.keys() - new[kind].keys()]
        # Services before their tasks when adding; tasks before their service when removing.
        changes = sets + sorted(removals, key=lambda change: change[1] != "task")
        self._check_references(changes, new)
        for action, singular, value in changes:
            getattr(self.planner, f"{action}_{singular}")(value)
            if action == "remove" and singular == "task":
                self.arrival.forget(value)
        self.raw.update(new)
        self.changed_objects += len(changes)

    def _full(self, data: dict, options: PlanOptions) -> None:
        cluster = self.arrival.stamp_all(snapshot.from_dict(data))
        self.planner = IncrementalPlanner(cluster, self.node_id, options)
        self.raw = {"version": data.get("version"), "nodes": data.get("nodes"), "networks": data.get("networks"),
                    **{kind: _by_id(data.get(kind, [])) for kind, _ in _ITEMS}}
        self.full_syncs += 1

    def _check_references(self, changes: list, new: dict) -> None:
        networks = {n.id for n in self.planner.networks.values()}
        for action, singular, value in changes:
            if action != "set":
                continue
            if singular == "task":
                if value.service_id not in new["services"]:
                    raise snapshot.SnapshotError(f"tasks[{value.id!r}].service_id: {value.service_id!r} is not a known service")
                if value.node_id not in self.planner.nodes:
                    raise snapshot.SnapshotError(f"tasks[{value.id!r}].node_id: {value.node_id!r} is not a known node")
                unknown = [a.network_id for a in value.addresses if a.network_id not in networks]
            else:
                unknown = [v.network_id for v in value.vips if v.network_id not in networks]
            if unknown:
                raise snapshot.SnapshotError(f"{singular}s[{value.id!r}]: {unknown[0]!r} is not a known network")

    def plan(self, options: PlanOptions) -> NodePlan:
        self.planner.set_options(options)
        return self.planner.plan()

    def node_known(self) -> bool:
        return self.planner is not None and self.node_id in self.planner.nodes

    def task(self, task_id: str) -> Optional[model.Task]:
        service_id = self.planner.task_service.get(task_id) if self.planner else None
        return self.planner.tasks.get(service_id, {}).get(task_id) if service_id else None
