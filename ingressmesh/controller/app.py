"""`ingressmesh controller`: swarm provider + node reports → merged, versioned snapshot over HTTP.

Runs on a manager (only managers answer /services and /tasks).  Every swarm change and every
node report updates the merge (live_merge.py: only the touched tasks when only tasks moved);
the store gets only the objects that changed, bumps the version when something did, and
long-polling agents get the delta at once.  A node report that names a task the swarm state does not
have yet, a container that started stopping or changed health, pokes the provider for an immediate
task resync and busy polling until the manager's list follows.
"""
from __future__ import annotations

import logging
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Optional

import docker

from .. import snapshot
from ..snapshot import FORMAT_VERSION, plain_form
from ..daemon.metrics import ControllerMetrics
from ..daemon.sdnotify import Notifier, Watchdog
from ..swarm.provider import SwarmProvider
from ..swarm.state import SwarmState
from . import lb_claims
from .live_merge import Changes, LiveMerge
from .report_order import ReportOrder
from .server import ControllerServer, ReportStale, ReportUnknown
from .store import SnapshotStore

log = logging.getLogger(__name__)
REPORT_FRESH = 60.0  # an agent silent for longer no longer counts as reporting
# A controller that just started knows no node's health or lb addresses: publishing then would
# make agents drop every namespace and every health-checked backend.  It waits for a report
# from every ready node, or this long (two agent heartbeats and then some).
REPORT_GRACE = 12.0


@dataclass(frozen=True)
class ControllerConfig:
    docker_url: str = "unix:///var/run/docker.sock"
    listen: tuple[str, int] = ("0.0.0.0", 9401)
    stale_after: float = 30.0  # /healthz fails when the swarm has not been read for this long


def docker_api(url: str):
    return lambda: docker.APIClient(base_url=url, version="auto", timeout=15)


class Controller:
    def __init__(self, config: ControllerConfig, token: str, tls: Optional[ssl.SSLContext] = None):
        self.config = config
        self.store = SnapshotStore()
        self.metrics = ControllerMetrics()
        self.reports: dict[str, dict] = {}
        # When each node was last heard from, on this controller's own clock (an agent's
        # sent_at may be skewed): reports and heartbeats alike.
        self.heard: dict[str, float] = {}
        self.live = LiveMerge()
        self.refused: tuple[str, ...] = ()
        self.started = time.monotonic()
        self._merge_lock = threading.Lock()
        # The report map is written by request threads and read by merges and /healthz: every
        # access copies or changes it under this (short) lock, never iterates it bare.
        self._reports_lock = threading.Lock()
        self.order = ReportOrder()  # a report older than the last accepted one is refused (409)
        self.provider = SwarmProvider(docker_api(config.docker_url), config.docker_url, self._swarm_changed,
                                      on_read=self._swarm_read)
        self.server = ControllerServer(self.store, self._on_report, token, self.metrics, config.listen,
                                       health=self._health, tls=tls)  # tls: daemon/tls.py, None for http

    def start(self) -> "Controller":
        self.server.start()
        self.provider.start()
        return self

    def stop(self) -> None:
        self.provider.stop()
        self.store.close()
        self.server.stop()

    def _swarm_read(self, seconds: float, error: Optional[str]) -> None:
        self.metrics.resync_duration.observe(seconds)
        if error:
            self.metrics.resync_failures.labels(endpoint=self.config.docker_url).inc()
        else:
            self.metrics.last_successful_resync.set(time.time())

    def _swarm_changed(self, state: SwarmState) -> None:
        self.publish()

    def _on_report(self, report: dict) -> None:
        node_id = report["node_id"]
        if "same_as" in report:  # a heartbeat repeating the last report: nothing to merge
            with self._reports_lock:
                held = (self.reports.get(node_id) or {}).get("digest")
                if held == report["same_as"]:
                    self._admit(report)
                    self.heard[node_id] = time.monotonic()
                    return
            raise ReportUnknown(f"no report {report['same_as'][:12]}… held for node {node_id}: send it whole")
        with self._reports_lock:
            self._admit(report)
            previous = self.reports.get(node_id) or {}
            # When each lb address was first claimed: the earlier claim keeps a contested address.
            self.reports[node_id] = lb_claims.stamp(report, previous, time.monotonic())
            self.heard[node_id] = time.monotonic()
        state = self.provider.state
        known = state.task_ids if state else frozenset()
        old, new = previous.get("containers") or {}, report.get("containers") or {}
        started = set(new) - set(old) - known
        stopping = {t for t, e in new.items() if e.get("stopping") and not (old.get(t) or {}).get("stopping")}
        # Swarm lists a health-checked task as running only once its node saw it healthy: the
        # manager's list follows this report, and polling is busy until it has.
        health_changed = {t for t, e in new.items() if t in old and e.get("health") != old[t].get("health")}
        # A new lb endpoint: the manager's task list must show this node's task on that network
        # before the claim is accepted (lb_claims.py), e.g. a standalone container that just joined.
        new_endpoint = set(report.get("lb_addresses") or {}) - set(previous.get("lb_addresses") or {})
        if started or stopping or new_endpoint or health_changed:
            self.provider.poke(busy=True)  # the manager's task list is behind what this node just saw
        self.publish()

    def _admit(self, report: dict) -> None:
        """With the reports lock held: ReportStale (409) for a report older than the last accepted."""
        try:
            self.order.admit(report["node_id"], report.get("seq"), report.get("sent_at", 0.0), time.monotonic())
        except ReportStale as err:
            self.metrics.refused_reports.labels(node=report["node_id"]).inc()
            log.warning("report refused: %s", err)
            raise

    def _fresh(self) -> set:
        """Nodes heard from within REPORT_FRESH seconds."""
        now = time.monotonic()
        with self._reports_lock:
            return {node for node, at in self.heard.items() if now - at < REPORT_FRESH}

    def _reports(self) -> dict:
        with self._reports_lock:
            return dict(self.reports)

    def _forget_departed(self, state: SwarmState) -> None:
        """Reports of nodes that left the swarm go (they would count as agents forever)."""
        nodes = {n.id for n in state.nodes}
        with self._reports_lock:
            for node_id in set(self.reports) - nodes:
                del self.reports[node_id]
                self.heard.pop(node_id, None)
                self.order.forget(node_id)

    def _heard_enough(self, state: SwarmState, reports: dict) -> bool:
        ready = {n.id for n in state.nodes if n.state == "ready"}
        return ready <= set(reports) or time.monotonic() - self.started > REPORT_GRACE

    def publish(self) -> Optional[int]:
        with self._merge_lock:
            state = self.provider.state  # read under the lock: a newer state is never overwritten
            if state is not None:
                self._forget_departed(state)
            reports = self._reports()
            if state is None or not self._heard_enough(state, reports):
                return None
            try:
                changes = self.live.update(state, reports, time.time())
            except snapshot.SnapshotError as err:
                log.error("merge failed, keeping the last snapshot: %s", err)
                return None
            if changes is None:  # a heartbeat or an event that changed nothing
                return self.store.version
            for message in sorted(set(changes.refused) - set(self.refused)):
                log.error("refused: %s", message)
            self.refused = changes.refused
            self._count_refusals()
            version = self.store.publish_delta(_as_delta(changes))
            self.metrics.observe_counts(version, self.store.counts())
            self.metrics.agents_reporting.set(len(self._fresh()))
        return version

    def _count_refusals(self) -> None:
        """With the merge lock held: the refusal gauges, lb claims per reporting node."""
        self.metrics.refused.set(len(self.refused))
        per_node: dict = {}
        for node_id in self.live.claims.refused_nodes:
            per_node[node_id] = per_node.get(node_id, 0) + 1
        self.metrics.refused_lb_claims.clear()
        for node_id, count in per_node.items():
            self.metrics.refused_lb_claims.labels(node=node_id).set(count)

    @property
    def cluster(self):
        """The merged cluster as last published (model form)."""
        with self._merge_lock:
            return self.live.cluster()

    def _health(self) -> tuple[bool, dict]:
        age = time.time() - self.provider.last_success if self.provider.last_success else None
        ok = age is not None and age < self.config.stale_after
        reports = self._reports()
        stale = sorted(set(reports) - self._fresh())
        details = {"swarm_endpoint": self.config.docker_url, "swarm_read_age": age,
                   "stale_agents": stale,  # their nodes' health is as last reported
                   "swarm_error": self.provider.last_error or None, "refused": list(self.refused),
                   "agents": sorted(reports)}
        if not ok:
            details["problem"] = (f"swarm API not read for {age:.0f} s" if age is not None
                                  else "swarm API never read successfully")
        return ok, details

    def run(self, stop: threading.Event, notifier: Notifier) -> None:
        """Serve until `stop` is set; READY once the first snapshot is published."""
        self.start()
        watchdog = Watchdog(notifier, alive=lambda: self.provider.thread.is_alive()).start()
        try:
            while not stop.is_set():
                version, cluster = self.store.current()
                if cluster is not None:
                    break
                self.publish()
                notifier.status(f"waiting for the swarm API at {self.config.docker_url} "
                                f"({self.provider.last_error or 'first read'}) and the agents' reports")
                stop.wait(0.2)
            notifier.ready()
            log.info("controller serving on %s:%d", *self.config.listen)
            ticks = 0
            while not stop.wait(1.0):
                self.publish()  # also ends the report grace of a fresh start on time
                ticks += 1
                if ticks % 5 == 0:
                    notifier.status(f"snapshot {self.store.current()[0]}, {len(self._reports())} agents reporting")
        finally:
            notifier.stopping()
            watchdog.stop()
            self.stop()


def _as_delta(changes: Changes) -> dict:
    """The store's delta for `changes`: plain forms of the changed objects only.  The refusals
    ride along as meta (ignored by the snapshot reader; shown by the CLI)."""
    return {"set": {kind: [plain_form(obj) for obj in objs] for kind, objs in changes.set.items()},
            "remove": dict(changes.remove),
            "meta": {"version": FORMAT_VERSION, "refused": list(changes.refused)}}
