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
import itertools
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
# bench/fast_path_fanout.py), so at most this many containers get the fast path; the others
# use the LB namespace (the fallback) until a place frees up.
MAX_CONTAINERS = 20


class FastPath:
    def __init__(self, namespaces: DockerNamespaces, containers: LocalContainers, make_backend: Callable,
                 max_containers: int = MAX_CONTAINERS, enabled: bool = True):
        self.namespaces, self.containers, self.max_containers = namespaces, containers, max_containers
        # Disabled (--no-fast-path), it only empties the tables an earlier run left in containers,
        # so none keeps sending to tasks it no longer hears about.
        self.enabled = enabled
        self.over_limit = False
        self._had: dict[str, bool] = {}  # container id -> held a table when first seen
        self._holders: dict[str, int] = {}  # containers with the fast path -> in which order they got it
        self._order = itertools.count()
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

    def stop(self, timeout: float = 15.0) -> None:
        """Stop, and wait for a sync under way: the agent's stop policy may remove every table next."""
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

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

    def _had_table(self, container_id: str) -> bool:
        """Whether the container held an ingressmesh table when first seen (an earlier run's)."""
        if container_id not in self._had:
            path = self.applier.layout.containers.get(container_id, "")
            try:
                self._had[container_id] = bool(path) and KernelNft(Netns(path)).has_table()
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
        for ns in candidates:
            if ns.container_id not in self._holders and self._had_table(ns.container_id):
                self._holders[ns.container_id] = next(self._order)
        waiting = sorted((ns for ns in candidates if ns.container_id not in self._holders),
                         key=lambda ns: (self._first_seen.get(ns.container_id, 0.0), ns.container_id))
        for ns in waiting[:max(0, self.max_containers - len(self._holders))]:
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
                "limit": self.max_containers, "over_limit": self.over_limit, "errors": dict(self.errors),
                "docker_error": self.containers.last_error or None}

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
        candidates = [ns for ns in planned.namespaces if ns.role == "container"]
        held = tuple(h for h in planned.held if h[0].startswith("ctr:"))
        if self.enabled:
            chosen = self._choose(candidates, {key.removeprefix("ctr:") for key, _ in held})
        else:  # tables an earlier run left: emptied (the connections they NATed are cut, once)
            chosen = [dataclasses.replace(ns, vips=()) for ns in candidates if self._had_table(ns.container_id)]
            held = ()
        only = NodePlan(node_id=plan.node_id, namespaces=tuple(chosen), held=held)
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
            self._had.pop(gone, None)
