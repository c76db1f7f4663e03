"""The controller's merge kept current at the cost of what changed.

`merge.merge` re-merges the whole swarm: about a second at 10,000 services × 10 tasks.  Most
changes are one task (a health report, a task starting or stopping), so LiveMerge keeps the
merged objects by id and, when only tasks or node reports moved, re-merges just the tasks they
touch and checks just those (their node, service and networks exist, their addresses lie in
the subnet and nobody else holds them).  It runs the whole merge instead when a node, network
or service changed, a node's load-balancer addresses changed (or a task change changes which of
them are accepted: lb_claims.py), the last merge refused anything
of its own (a refused task may be fine now), or a touched task fails a check (the whole merge
then names the culprit exactly as before).  Either way the result equals `merge.merge` on the
same inputs (tested with random changes), and `update` says what changed, object by object.

Reports are replaced, never modified in place: a report is unchanged while it is the same object.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from .. import model
from ..delta import KINDS, diff
from ..swarm.state import SwarmState
from .lb_claims import CLAIMED_AT, Claims, judge
from .merge import SinceTracker, _task, merge


@dataclass(frozen=True)
class Changes:
    """What one update changed: objects added or changed, ids removed, and all refusals."""
    set: dict = field(default_factory=dict)  # kind -> [model object]
    remove: dict = field(default_factory=dict)  # kind -> [id]
    refused: tuple[str, ...] = ()
    whole: bool = False  # the whole merge ran


class _Fallback(Exception):
    """A touched task failed a check: only the whole merge may decide what to refuse."""


class LiveMerge:
    def __init__(self):
        self.tracker = SinceTracker()
        self.state: Optional[SwarmState] = None
        self.reports: dict = {}
        self.view: dict = {kind: {} for kind in KINDS}  # kind -> {id: merged object}
        self.refused: tuple[str, ...] = ()
        self.whole_merges = 0
        self._raw: dict = {}  # task id -> the provider's running task of a known service
        self._by_node: dict = {}  # node id -> task ids in _raw
        self._holders: dict = {}  # (network id, address) -> who holds it
        self._subnets: dict = {}
        self._claims: Optional[Claims] = None  # the lb claims' verdict of the last whole merge

    @property
    def claims(self) -> Claims:
        """The lb address claims' verdict of the last whole merge (refusals name their nodes)."""
        return self._claims or Claims()

    def cluster(self) -> model.Cluster:
        """The merged cluster as it is now (order: as stored)."""
        return model.Cluster(**{kind: tuple(self.view[kind].values()) for kind in KINDS})

    def update(self, state: SwarmState, reports: dict, now: float) -> Optional[Changes]:
        """Bring the merge up to `state` and `reports`; None when nothing changed."""
        if self._needs_whole(state, reports):
            return self._whole(state, reports, now)
        try:
            changes = self._tasks_only(state, reports, now)
        except _Fallback:
            return self._whole(state, reports, now)
        self.state, self.reports = state, dict(reports)
        return changes

    # --- when the whole merge must run ----------------------------------------------------------
    def _needs_whole(self, state: SwarmState, reports: dict) -> bool:
        old = self.state
        # Refusals of the merge's own (not the provider's, not lb claims, which depend only on
        # what is compared below): a refused task may be fine now.
        if old is None or len(self.refused) != len(old.errors) + len(self.claims.refused):
            return True
        for name in ("nodes", "networks", "services", "health_checked", "errors", "attachments"):
            before, after = getattr(old, name), getattr(state, name)
            if before is not after and before != after:
                return True
        for node_id in set(reports) | set(self.reports):
            before, after = self.reports.get(node_id), reports.get(node_id)
            if before is not after and _lb(before) != _lb(after):
                return True
        # A task that came or went may take an accepted lb address or end a node's endpoint.
        return state.tasks is not old.tasks and judge(state, reports) != self._claims

    def _whole(self, state: SwarmState, reports: dict, now: float) -> Optional[Changes]:
        self._claims = judge(state, reports)
        merged = merge(state, reports, self.tracker, now, self._claims)
        first = self.state is None
        self.whole_merges += 1
        view = {kind: {obj.id: obj for obj in getattr(merged.cluster, kind)} for kind in KINDS}
        change = diff(self.view, {}, view, {})  # by id, whatever the objects are
        sets, removes = change["set"], change["remove"]
        refused_changed = merged.refused != self.refused
        self.state, self.reports, self.view, self.refused = state, dict(reports), view, merged.refused
        self._index(state)
        if not sets and not removes and not refused_changed and not first:
            return None
        return Changes(sets, removes, merged.refused, whole=True)

    def _index(self, state: SwarmState) -> None:
        services = self.view["services"]
        self._raw = {t.id: t for t in state.tasks if t.current_state == "running" and t.service_id in services}
        self._by_node = {}
        for task in self._raw.values():
            self._by_node.setdefault(task.node_id, set()).add(task.id)
        self._subnets = {n.id: ipaddress.IPv4Network(n.subnet) for n in self.view["networks"].values()}
        self._holders = {}
        for network in self.view["networks"].values():
            for entry in network.lb_addresses:
                self._holders[(network.id, entry.address)] = f"lb {entry.node_id}"
        for service in services.values():
            for vip in service.vips:
                self._holders[(vip.network_id, vip.address)] = f"vip {service.id}"
        for task in self.view["tasks"].values():
            for addr in task.addresses:
                self._holders[(addr.network_id, addr.address)] = task.id

    # --- tasks and reports only -------------------------------------------------------------------
    def _tasks_only(self, state: SwarmState, reports: dict, now: float) -> Optional[Changes]:
        raw, gone = self._raw, set()
        touched: set = set()
        if state.tasks is not self.state.tasks:
            services = self.view["services"]
            running = [t for t in state.tasks if t.current_state == "running" and t.service_id in services]
            raw = {t.id: t for t in running}
            if len(raw) != len(running):
                raise _Fallback()  # a repeated id: the whole merge names it
            old_raw = self._raw
            touched = {i for i, t in raw.items() if old_raw.get(i) is not t and old_raw.get(i) != t}
            gone = old_raw.keys() - raw.keys()
        for node_id in set(reports) | set(self.reports):
            before, after = self.reports.get(node_id), reports.get(node_id)
            if before is after:
                continue
            if (before is None) != (after is None):  # a node fell silent or spoke again
                touched |= {i for i in self._by_node.get(node_id, ()) if i in raw}  # new ones are in already
                continue
            old_c, new_c = before.get("containers") or {}, after.get("containers") or {}
            if old_c != new_c:
                touched |= {i for i in old_c.keys() | new_c.keys() if old_c.get(i) != new_c.get(i) and i in raw}
        fresh = {i: _task(raw[i], state, reports, self.tracker, now) for i in touched}
        current = self.view["tasks"]
        changed = {i: t for i, t in fresh.items() if current.get(i) != t}
        self._check(changed, gone)
        for task_id in gone:
            self.tracker.seen.pop(task_id, None)
        self._commit(raw, changed, gone)
        if not changed and not gone:
            return None
        return Changes({"tasks": list(changed.values())} if changed else {},
                       {"tasks": sorted(gone)} if gone else {}, self.refused)

    def _check(self, changed: dict, gone: set) -> None:
        """Raise _Fallback unless every changed task resolves and holds only free addresses."""
        nodes = {n.id for n in self.state.nodes}
        current = self.view["tasks"]
        released = {(a.network_id, a.address) for i in set(changed) | gone if i in current
                    for a in current[i].addresses}
        claimed: dict = {}
        for task in changed.values():
            if task.node_id not in nodes:
                raise _Fallback()
            for addr in task.addresses:
                key = (addr.network_id, addr.address)
                subnet = self._subnets.get(addr.network_id)
                if subnet is None or ipaddress.IPv4Address(addr.address) not in subnet:
                    raise _Fallback()
                holder = self._holders.get(key)
                if key in claimed or (holder is not None and holder != task.id and key not in released):
                    raise _Fallback()
                claimed[key] = task.id

    def _commit(self, raw: dict, changed: dict, gone: set) -> None:
        current = self.view["tasks"]
        for task_id in set(changed) | gone:
            old = current.get(task_id)
            for addr in old.addresses if old else ():
                if self._holders.get((addr.network_id, addr.address)) == task_id:
                    del self._holders[(addr.network_id, addr.address)]
        for task_id in gone:
            current.pop(task_id, None)
        for task_id, task in changed.items():
            current[task_id] = task
            for addr in task.addresses:
                self._holders[(addr.network_id, addr.address)] = task_id
        if raw is not self._raw:  # the provider's task list moved: it was read whole anyway
            self._raw = raw
            self._by_node = {}
            for task in raw.values():
                self._by_node.setdefault(task.node_id, set()).add(task.id)


def _lb(report: Optional[dict]):
    return None if report is None else (report.get("lb_addresses"), report.get(CLAIMED_AT))
