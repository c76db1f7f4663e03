"""The agent's view of the cluster, kept in step with successive snapshots or deltas at the cost
of what changed.

A snapshot is the whole swarm; between two of them a handful of services and tasks differ.
Those (sent as a delta, or found by comparing each object's plain form by id) are checked on
their own and handed to the incremental planner; everything else is left as it was.  Nodes or networks changing
(rare: an lb endpoint re-created, a node down) and the first snapshot take the full path:
`snapshot.from_dict` with every cross-object check.  The controller ran those checks on the
snapshot it sent, so the fast path only re-checks each changed object and its references.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from .. import delta as deltas
from .. import model, snapshot
from ..arrival import ArrivalClock
from ..incremental import IncrementalPlanner
from ..plan import NodePlan, PlanOptions

_ITEMS = (("services", "service"), ("tasks", "task"))


class _Overlay:
    """A kind's objects with a delta laid over them, without copying the 100,000 underneath;
    `commit()` writes the delta into them once every check has passed."""

    def __init__(self, base: dict, sets, removes):
        self.base, self.sets, self.removes = base, {item["id"]: item for item in sets}, set(removes)

    def get(self, item_id, default=None):
        if item_id in self.sets:
            return self.sets[item_id]
        return default if item_id in self.removes else self.base.get(item_id, default)

    def __contains__(self, item_id) -> bool:
        return self.get(item_id, _MISSING) is not _MISSING

    def commit(self) -> dict:
        for item_id in self.removes:
            self.base.pop(item_id, None)
        self.base.update(self.sets)
        return self.base


_MISSING = object()


class ClusterFollower:
    def __init__(self, node_id: str, clock: Callable[[], float] = time.time):
        self.node_id = node_id
        self.arrival = ArrivalClock(clock)  # drain grace on this host's clock, not the controller's
        self.planner: Optional[IncrementalPlanner] = None
        self.raw: dict = {}  # kind -> {id: plain form} of the snapshot taken; "meta" -> the rest
        self.full_syncs = 0
        self.deltas = 0
        self.changed_objects = 0
        self.version = 0  # of the snapshot held
        self.epoch: Optional[str] = None  # the controller incarnation that numbered it
        self.followed = 0  # the last version received, taken or refused
        self.need_whole = True

    def since(self) -> int:
        """The version to follow from: the last one received, or 0 (never current, so the whole
        snapshot comes at once) when none is held or a delta could not be used."""
        return 0 if self.need_whole else self.followed

    def take_update(self, update, options: PlanOptions) -> bool:
        """Adopt an Update (controller_client.py): the whole cluster, or a delta from the version
        held.  False when the delta is from another version (a step was lost): the whole
        snapshot is asked for next.  Raises SnapshotError like take(); after a bad delta the
        whole snapshot is asked for, after a bad whole snapshot nothing until a newer one."""
        if update.cluster is None and (update.since != self.version or self.planner is None
                                       or update.epoch is None or update.epoch != self.epoch):
            self.need_whole = True
            return False
        try:
            if update.cluster is not None:
                self.take(update.cluster, options)
            else:
                self.take_delta(update.delta, options)
        except snapshot.SnapshotError:
            self.need_whole = update.cluster is None
            self.followed, self.epoch = update.version, update.epoch
            raise
        self.need_whole = False
        self.version = self.followed = update.version
        self.epoch = update.epoch
        return True

    def take(self, data: dict, options: PlanOptions) -> None:
        """Adopt snapshot `data`; raises SnapshotError (naming the culprit) and keeps the
        previous view when the snapshot is bad."""
        if not isinstance(data, dict):
            raise snapshot.SnapshotError("snapshot: expected an object")
        objects, meta = deltas.split(data)
        if not self._same_shape(objects, meta):
            self._full(data, options)
            return
        new = {kind: objects.get(kind, {}) for kind, _ in _ITEMS}
        sets = {kind: [item for item_id, item in new[kind].items() if self.raw[kind].get(item_id) != item]
                for kind, _ in _ITEMS}
        removes = {kind: [item_id for item_id in self.raw[kind] if item_id not in new[kind]] for kind, _ in _ITEMS}
        self._apply(sets, removes, new)
        self.raw["meta"] = meta

    def take_delta(self, change: dict, options: PlanOptions) -> None:
        """Apply a delta (delta.py) to the snapshot taken last; raises SnapshotError naming the
        culprit and keeps the previous view when it cannot be used (the caller then asks for
        the whole snapshot)."""
        if self.planner is None:
            raise snapshot.SnapshotError("delta: no snapshot to apply it to")
        try:
            change = deltas.check(change)
        except ValueError as err:
            raise snapshot.SnapshotError(str(err)) from None
        format_same = change["meta"] is None or change["meta"].get("version") == self.raw["meta"].get("version")
        if any(change[part].get(kind) for part in ("set", "remove") for kind in ("nodes", "networks")) \
                or not format_same or any(kind in (change["meta"] or {}) for kind in deltas.KINDS):
            # Rare (a node or an lb endpoint changed): rebuild from the whole snapshot it gives.
            objects = {kind: dict(self.raw[kind]) for kind in deltas.KINDS}
            meta = deltas.apply(objects, self.raw["meta"], change)
            self._full(deltas.join(objects, meta), options)
            self.deltas += 1
            return
        new = {kind: _Overlay(self.raw[kind], change["set"].get(kind, ()), change["remove"].get(kind, ()))
               for kind, _ in _ITEMS}
        self._apply({kind: list(change["set"].get(kind, ())) for kind, _ in _ITEMS},
                    {kind: [i for i in change["remove"].get(kind, ()) if i in self.raw[kind]] for kind, _ in _ITEMS},
                    new)
        if change["meta"] is not None:
            self.raw["meta"] = dict(change["meta"])
        self.deltas += 1

    def _same_shape(self, objects: dict, meta: dict) -> bool:
        """Whether `objects` can take the fast path: same nodes, networks and format."""
        return (self.planner is not None and meta.get("version") == self.raw["meta"].get("version")
                and all(kind in objects for kind in deltas.KINDS)
                and objects["nodes"] == self.raw["nodes"] and objects["networks"] == self.raw["networks"])

    def _apply(self, sets: dict, removes: dict, new: dict) -> None:
        """Check the changed services and tasks, then hand them to the planner (services before
        their tasks when adding; tasks before their service when removing)."""
        changes = []
        for kind, singular in _ITEMS:
            for item in sets[kind]:
                value = snapshot.item_from_dict(singular, item, f"{kind}[{item.get('id')!r}]")
                changes.append(("set", singular, self.arrival.stamp(value) if singular == "task" else value))
        removals = [("remove", singular, item_id) for kind, singular in _ITEMS for item_id in removes[kind]]
        changes += sorted(removals, key=lambda change: change[1] != "task")
        self._check_references(changes, new)
        for action, singular, value in changes:
            getattr(self.planner, f"{action}_{singular}")(value)
            if action == "remove" and singular == "task":
                self.arrival.forget(value)
        for kind, items in new.items():
            self.raw[kind] = items.commit() if isinstance(items, _Overlay) else items
        self.changed_objects += len(changes)

    def _full(self, data: dict, options: PlanOptions) -> None:
        cluster = self.arrival.stamp_all(snapshot.from_dict(data))
        self.planner = IncrementalPlanner(cluster, self.node_id, options)
        objects, meta = deltas.split(data)
        self.raw = {"meta": meta, **{kind: objects.get(kind, {}) for kind in deltas.KINDS}}
        self.full_syncs += 1

    def _check_references(self, changes: list, new: dict) -> None:
        networks = {n.id for n in self.planner.networks.values()}
        removed_tasks = {value for action, singular, value in changes if action == "remove" and singular == "task"}
        for action, singular, value in changes:
            if action != "set":
                if singular == "service":
                    left = [t for t in set(self.planner.tasks.get(value, {})) - removed_tasks
                            if new["tasks"].get(t, {}).get("service_id") == value]
                    if left:
                        raise snapshot.SnapshotError(f"services[{value!r}]: removed while tasks[{sorted(left)[0]!r}] "
                                                     "still names it")
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
