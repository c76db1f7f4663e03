"""The VIP fast path on this node: every local container's own namespace DNATs its VIPs.

Runs on its own thread with its own NodeApplier, which only ever holds `container` namespaces
(the main loop's applier holds host, ingress and LB namespaces), so a container that starts is
programmed at once instead of waiting for the main loop's long-poll.  It re-plans when the
main loop has a new node plan or the local container list changes, and retries failed
namespaces every second.  Until its namespace is programmed a container reaches every VIP
through the LB namespace (the fallback); `seen_to_programmed` records how long that lasted.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Optional

from ..dataplane.apply import NodeApplier
from ..dataplane.layout import Layout
from ..netns import Netns
from ..nft.kernel import KernelNft
from ..plan import NodePlan
from ..plan_containers import LocalContainer, plan_containers
from ..swarm.local_containers import LocalContainers
from .docker_layout import DockerNamespaces

log = logging.getLogger(__name__)
RETRY = 1.0


# One endpoint change costs about 25 ms per container namespace (an `nft -f` in each;
# bench/fast_path_fanout.py), so at most this many containers have the fast path at a time;
# the others use the LB namespace (the fallback) and their tables never lag behind.
MAX_CONTAINERS = 20


class FastPath:
    def __init__(self, namespaces: DockerNamespaces, containers: LocalContainers, make_backend: Callable,
                 max_containers: int = MAX_CONTAINERS, enabled: bool = True):
        self.namespaces, self.containers, self.max_containers = namespaces, containers, max_containers
        # Disabled (--no-fast-path), it only empties the tables an earlier run left in containers,
        # so none keeps sending to tasks it no longer hears about.
        self.enabled = enabled
        self.over_limit = False
        self._had_table: dict[str, bool] = {}  # disabled: container id -> held a table when first seen
        self.applier = NodeApplier(Layout(), make_backend)
        self.errors: dict[str, str] = {}
        self.seen_to_programmed: dict[str, float] = {}  # container id -> seconds on the fallback
        self._plan: Optional[NodePlan] = None
        self._first_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fast-path", daemon=True)

    def start(self) -> "FastPath":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def plan_changed(self, plan: NodePlan) -> None:
        with self._lock:
            self._plan = plan
        self._wake.set()

    def containers_changed(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(RETRY if self.errors else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync()
            except Exception as err:  # noqa: BLE001 - never die: the LB namespace still serves
                log.exception("fast path sync failed; retrying in %.0f s", RETRY)
                self.errors = {"fast-path": repr(err)}

    def sync(self) -> None:
        with self._lock:
            plan = self._plan
        if plan is None:
            return
        facts = self.containers.current()
        now = time.monotonic()
        for f in facts:
            self._first_seen.setdefault(f.id, now)
        directory = self.namespaces.netns_dir()
        self.applier.layout = Layout(containers={f.id: f"{directory}/{f.sandbox}" for f in facts})
        planned = plan_containers(plan, [LocalContainer(f.id, f.name, f.network_ids) for f in facts])
        chosen = tuple(ns for ns in planned.namespaces if ns.role == "container")
        if self.enabled:
            # At most max_containers at a time, the longest-known first: a container that has
            # the fast path keeps it (taking it away would cut the connections it NATed), one
            # beyond the limit uses the LB namespace until a place frees up.
            chosen = tuple(sorted(chosen, key=lambda ns: (self._first_seen[ns.container_id], ns.container_id))
                           [:self.max_containers])
            over = len(chosen) < sum(1 for ns in planned.namespaces if ns.role == "container")
            if over != self.over_limit:
                log.warning("fast path: %s (--fast-path-max-containers %d)", "more containers on overlays than "
                            "the limit, the newest use the LB namespace" if over else "every container has it again",
                            self.max_containers)
                self.over_limit = over
        else:  # tables an earlier run left: emptied (the connections they NATed are cut, once)
            paths = self.applier.layout.containers
            for ns in chosen:
                if ns.container_id not in self._had_table:
                    self._had_table[ns.container_id] = KernelNft(Netns(paths[ns.container_id])).has_table()
            chosen = tuple(dataclasses.replace(ns, vips=()) for ns in chosen if self._had_table[ns.container_id])
        only = NodePlan(node_id=plan.node_id, namespaces=chosen)
        report = self.applier.apply(only)
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
            self._had_table.pop(gone, None)
