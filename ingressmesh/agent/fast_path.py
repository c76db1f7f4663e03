"""The VIP fast path on this node: every local container's own namespace DNATs its VIPs.

Runs on its own thread with its own NodeApplier, which only ever holds `container` namespaces
(the main loop's applier holds host, ingress and LB namespaces), so a container that starts is
programmed at once instead of waiting for the main loop's long-poll.  It re-plans when the
main loop has a new node plan or the local container list changes, and retries failed
namespaces every second.  Until its namespace is programmed a container reaches every VIP
through the LB namespace (the fallback); `seen_to_programmed` records how long that lasted.

Writes go through libnftables in this process (nft/libnft.py: setns, no process per
namespace), as element changes rendered once for every container (nft/shared_renders.py), so
one change costs well under a millisecond per container and there is no container limit by
default.  A container whose namespace holds packet-filter rules of its own stays on the LB
path (its rules would see the task's address instead of the VIP; nft/own_rules.py) unless its
label `io.ingressmesh.fast_path=true` opts it in; `=false` keeps any container out.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from typing import Callable, Optional

from ..dataplane.apply import NodeApplier
from ..dataplane.layout import Layout
from ..netns import Netns
from ..nft.backend import NftBackend
from ..nft.libnft import LibNft
from ..nft.own_rules import own_rules
from ..nft.shared_renders import SharedRenders
from ..nft.transaction import cleanup_script
from ..plan import NodePlan
from ..plan_containers import LocalContainer, plan_containers
from ..swarm.local_containers import LocalContainers
from .docker_layout import DockerNamespaces
from .source_routes import SourceRoutes

log = logging.getLogger(__name__)
RETRY = 1.0
# A container's own rules are looked for when it is first seen and, because an entrypoint may
# add them a moment after the start, again this many seconds after it was first seen.  A look
# costs ~45 ms once its table is programmed (nft 1.0.6 fetches every element of the namespace
# even to list table names), hence a few looks, not one every few seconds.
RECHECK_AT = (2.0, 10.0, 30.0)
YOUNG, RECHECK = RECHECK_AT[-1], 2.0  # how long, and how often the thread wakes to see if one is due
MAX_CONTAINERS: Optional[int] = None  # no limit unless the operator sets one
# Container namespaces written at once (threads; libnftables works outside the GIL).  One by
# default: with two on this 2-core machine one change took longer (197 ms against 153 ms for
# 100 containers, bench/fast_path_fanout.py), the other core being busy anyway.
WORKERS = 1


class FastPath:
    def __init__(self, namespaces: DockerNamespaces, containers: LocalContainers,
                 make_backend: Optional[Callable] = None, max_containers: Optional[int] = MAX_CONTAINERS,
                 enabled: bool = True, workers: int = WORKERS, source_routes: Optional[SourceRoutes] = None):
        self.namespaces, self.containers, self.max_containers = namespaces, containers, max_containers
        # Disabled (--no-fast-path), it only empties the tables an earlier run left in containers,
        # so none keeps sending to tasks it no longer hears about.
        self.enabled = enabled
        self.over_limit = False
        self._had: dict[str, bool] = {}  # container id -> held a table when first seen
        self._holders: dict[str, int] = {}  # containers with the fast path -> in which order they got it
        self._order = itertools.count()
        self.renders = SharedRenders()
        self.applier = NodeApplier(Layout(), make_backend or (lambda netns: NftBackend(LibNft(netns), self.renders)),
                                   workers=workers)
        self.errors: dict[str, str] = {}
        self.own_rules: dict[str, list] = {}  # container id -> what makes its rules its own
        self.seen_to_programmed: dict[str, float] = {}  # container id -> seconds on the fallback
        self._checked: dict[str, int] = {}  # container id -> how often its own rules were looked for
        self._recheck_due = False  # young containers' rules are looked at again (not on a plan change)
        self._plan: Optional[NodePlan] = None
        self._cluster = None  # for the reply routes of source-keeping services' tasks (issue 21)
        self.source_routes = source_routes or SourceRoutes()
        self._first_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fast-path", daemon=True)

    def start(self) -> "FastPath":
        self.thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop, and wait for a sync under way: the agent's stop policy may remove every table next."""
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def plan_changed(self, plan: NodePlan, cluster=None) -> None:
        with self._lock:
            self._plan, self._cluster = plan, cluster
        self._wake.set()

    def containers_changed(self) -> None:
        self._recheck_due = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            young = any(time.monotonic() - seen < YOUNG for seen in self._first_seen.values())
            woken = self._wake.wait(RETRY if self.errors else RECHECK if young else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._recheck_due = self._recheck_due or not woken  # the timer, or a container event
            try:
                self.sync()
            except Exception as err:  # noqa: BLE001 - never die: the LB namespace still serves
                log.exception("fast path sync failed; retrying in %.0f s", RETRY)
                self.errors = {"fast-path": repr(err)}

    def _had_table(self, container_id: str) -> bool:
        """Whether the container held an ingressmesh table when first seen (an earlier run's)."""
        if container_id not in self._had:
            path = self.applier.layout.containers.get(container_id, "")
            try:
                self._had[container_id] = bool(path) and LibNft(Netns(path)).has_table()
            except Exception as err:  # noqa: BLE001 - gone meanwhile, or unreadable: none to manage
                log.info("fast path: cannot look into container %s's namespace: %s", container_id[:12], err)
                self._had[container_id] = False
        return self._had[container_id]

    def _choose(self, candidates: list, held_ids: set) -> list:
        """The containers that have the fast path: every one that has it keeps it while it runs
        (taking it away would cut the connections it NATed), and so does one whose table an
        earlier run left (never unmanaged); free places go to the longest-known others."""
        present = {ns.container_id for ns in candidates} | held_ids
        self._holders = {cid: n for cid, n in self._holders.items() if cid in present}
        limit = len(candidates) + len(held_ids) if self.max_containers is None else self.max_containers
        for ns in candidates:
            if ns.container_id not in self._holders and self._had_table(ns.container_id):
                self._holders[ns.container_id] = next(self._order)
        waiting = sorted((ns for ns in candidates if ns.container_id not in self._holders),
                         key=lambda ns: (self._first_seen.get(ns.container_id, 0.0), ns.container_id))
        for ns in waiting[:max(0, limit - len(self._holders))]:
            self._holders[ns.container_id] = next(self._order)
        chosen = [ns for ns in candidates if ns.container_id in self._holders]
        over = len(chosen) < len(candidates)
        if over != self.over_limit:
            log.warning("fast path: %s (--fast-path-max-containers %d)", "more containers on overlays than the "
                        "limit: the newest use the LB namespace until a place frees up" if over
                        else "every container has it again", self.max_containers)
            self.over_limit = over
        return chosen

    def status(self) -> dict:
        """For the agent's /healthz."""
        return {"enabled": self.enabled, "containers": len(self._holders) if self.enabled else 0,
                "limit": "none" if self.max_containers is None else self.max_containers,
                "over_limit": self.over_limit, "errors": dict(self.errors),
                "own_rules": {cid[:12]: why for cid, why in self.own_rules.items()},
                "docker_error": self.containers.last_error or None,
                "source_routes": self.source_routes.status()}

    def _eligible(self, facts, now: float, recheck: bool) -> list:
        """The containers that may have the fast path: not opted out, and holding no packet-filter
        rules of their own unless opted in.  One found with rules later loses its table: its
        operator's rules must see the VIP (issue 19.9)."""
        eligible = []
        for f in facts:
            if f.fast_path == "false":
                continue
            if f.fast_path != "true":
                age = now - self._first_seen.get(f.id, now)
                done = self._checked.get(f.id, 0)  # looks so far
                if done == 0 or (recheck and done <= len(RECHECK_AT) and age >= RECHECK_AT[done - 1]):
                    self._checked[f.id] = done + 1
                    self._look_for_rules(f)
                if f.id in self.own_rules:
                    continue
            eligible.append(f)
        return eligible

    def _look_for_rules(self, f) -> None:
        path = self.applier.layout.containers.get(f.id, "")
        try:
            netns = Netns(path)
            found = own_rules(LibNft(netns), netns) if path else []
        except Exception as err:  # noqa: BLE001 - unreadable (gone meanwhile): the LB path, safe
            found = [f"its rules cannot be read: {err}"]
        if found and f.id not in self.own_rules:
            log.warning("fast path: container %s has packet-filter rules of its own (%s): it stays on the LB "
                        "path, where they see the VIP (label io.ingressmesh.fast_path=true opts it in)",
                        f.name, ", ".join(found))
            self._holders.pop(f.id, None)
        if found:
            self.own_rules[f.id] = found
        else:
            self.own_rules.pop(f.id, None)

    def _remove_left_tables(self, kept_out: set) -> dict:
        """A table an earlier run left in a container now kept off the fast path is removed (one
        this run programmed is removed by the applier, as for a container that left)."""
        errors = {}
        for container_id in sorted(kept_out):
            if self.applier.backend(f"ctr:{container_id}") is None and self._had_table(container_id):
                path = self.applier.layout.containers[container_id]
                try:
                    LibNft(Netns(path)).run_script(cleanup_script())
                    self._had[container_id] = False
                except Exception as err:  # noqa: BLE001 - retried at the next sync
                    errors[f"ctr:{container_id}"] = f"{path}: cannot remove an earlier run's table: {err}"
        return errors

    def sync(self, recheck: Optional[bool] = None) -> None:
        """One pass.  Young containers' rules are looked at again if `recheck` (default: when a
        container event or the timer woke the thread, not for a plan change: an endpoint change
        must not wait for that)."""
        recheck, self._recheck_due = (self._recheck_due if recheck is None else recheck), False
        with self._lock:
            plan, cluster = self._plan, self._cluster
        if plan is None:
            return
        facts = self.containers.current()
        self.source_routes.sync(cluster, plan.node_id, facts, self.namespaces.netns_dir())
        now = time.monotonic()
        for f in facts:
            self._first_seen.setdefault(f.id, now)
        directory = self.namespaces.netns_dir()
        self.applier.layout = Layout(containers={f.id: f"{directory}/{f.sandbox}" for f in facts})
        self.renders.clear()
        eligible = self._eligible(facts, now, recheck) if self.enabled else facts
        left_errors = self._remove_left_tables({f.id for f in facts} - {f.id for f in eligible}) if self.enabled else {}
        planned = plan_containers(plan, [LocalContainer(f.id, f.name, f.network_ids) for f in eligible])
        candidates = [ns for ns in planned.namespaces if ns.role == "container"]
        held = tuple(h for h in planned.held if h[0].startswith("ctr:"))
        if self.enabled:
            chosen = self._choose(candidates, {key.removeprefix("ctr:") for key, _ in held})
        else:  # tables an earlier run left: emptied (the connections they NATed are cut, once)
            chosen = [dataclasses.replace(ns, vips=()) for ns in candidates if self._had_table(ns.container_id)]
            held = ()
        only = NodePlan(node_id=plan.node_id, namespaces=tuple(chosen), held=held)
        report = self.applier.apply(only)
        report.errors.update(left_errors)
        report.errors.update(self.source_routes.errors)
        for key, message in sorted(set(report.errors.items()) - set(self.errors.items())):
            log.info("fast path %s: %s (its VIPs go through the LB namespace meanwhile)", key, message)
        self.errors = dict(report.errors)
        done = time.monotonic()
        for ns in only.namespaces if self.enabled else ():
            if ns.key not in report.errors and ns.container_id not in self.seen_to_programmed:
                waited = done - self._first_seen.get(ns.container_id, done)
                self.seen_to_programmed[ns.container_id] = waited
                log.info("fast path: container %s programmed %.0f ms after it was seen", ns.container_name,
                         waited * 1000)
        alive = {f.id for f in facts}
        for gone in set(self._first_seen) - alive:
            self._first_seen.pop(gone, None)
            self.seen_to_programmed.pop(gone, None)
            self._had.pop(gone, None)
            self._checked.pop(gone, None)
            self.own_rules.pop(gone, None)
        self.renders.clear()  # nothing kept alive between plans
