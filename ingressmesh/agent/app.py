"""`ingressmesh agent`: follow the snapshot, plan for this node, program Docker's namespaces.

A level-triggered loop: a new snapshot, a drain deadline or a failed namespace (retried every
second) leads to plan → apply of the whole node plan; the backends diff against what they hold,
so an unchanged plan costs nothing.  When no controller answers, nothing is flushed: the kernel
keeps the last applied state and /healthz says the controller is unreachable.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import docker

from ..dataplane import backends
from .. import snapshot
from ..dataplane.apply import NodeApplier
from ..daemon.http import HttpService
from ..daemon.metrics import AgentMetrics
from ..daemon.sdnotify import Notifier, Watchdog
from ..dataplane.layout import Layout
from ..plan import DRAINING, NodePlan, PlanOptions
from ..swarm.backoff import Backoff
from ..swarm.local import LocalFacts
from ..swarm.local_containers import LocalContainers
from .cluster_follower import ClusterFollower
from .controller_client import ControllerAuthError, ControllerClient, ControllerError, Update
from .docker_extras import DockerExtras
from .docker_layout import DockerNamespaces
from .fast_path import FastPath
from .source_routes import SourceRoutes
from .reporter import Reporter
from .sync_health import SyncHealth

log = logging.getLogger(__name__)
RETRY = 1.0  # a namespace that failed (e.g. an lb sandbox not created yet) is retried this soon
LONG_POLL = 25.0
FACTS_WAIT = 10.0  # the first apply waits this long at most for the first read of the local dockerd


@dataclass(frozen=True)
class AgentConfig:
    controllers: tuple[str, ...]
    docker_url: str = "unix:///var/run/docker.sock"
    namespaces: DockerNamespaces = field(default_factory=DockerNamespaces)
    backend: str = "auto"
    listen: tuple[str, int] = ("0.0.0.0", 9402)
    drain_grace: float = 10.0
    ingress_gateway: str = "172.18.0.2"
    open_forward: bool = True  # accept published ports in FORWARD (Docker's policy there is DROP)
    fast_path: bool = True  # DNAT VIPs in local containers' own namespaces (nftables only)
    fast_path_max_containers: Optional[int] = None  # at most this many containers get the fast path (None: all)
    ipvs_timeouts: Optional[object] = None
    source_ip: str = "snat"  # default of label io.ingressmesh.lb.source_ip (plan_source_ip.py)


def local_node_id(docker_url: str) -> str:
    info = docker.APIClient(base_url=docker_url, version="auto", timeout=10).info()
    node_id = (info.get("Swarm") or {}).get("NodeID")
    if not node_id:
        raise RuntimeError(f"{docker_url}: this dockerd is not part of a swarm")
    return node_id


def manager_controllers(docker_url: str, port: int, https: bool = False) -> tuple[str, ...]:
    """A controller URL per swarm manager (this node's own first): the stack runs one on each."""
    info = docker.APIClient(base_url=docker_url, version="auto", timeout=10).info()
    swarm = info.get("Swarm") or {}
    hosts = {str(m.get("Addr", "")).rsplit(":", 1)[0] for m in swarm.get("RemoteManagers") or []} - {""}
    if not hosts:
        raise RuntimeError("docker info lists no swarm manager: is this node in a swarm?")
    own = swarm.get("NodeAddr")
    scheme = "https" if https else "http"
    return tuple(f"{scheme}://{host}:{port}" for host in sorted(hosts, key=lambda h: (h.strip("[]") != own, h)))


class Agent:
    def __init__(self, config: AgentConfig, token: str, node_id: str):
        self.config, self.node_id = config, node_id
        self.client = ControllerClient(list(config.controllers), token)
        self.health = SyncHealth()
        self.metrics = AgentMetrics()
        self.applier = NodeApplier(Layout(), backends.factory(config.backend, config.ipvs_timeouts))
        self.extras = DockerExtras(config.open_forward)
        make_api = lambda: docker.APIClient(base_url=config.docker_url, version="auto", timeout=15)  # noqa: E731
        self.facts = LocalFacts(make_api, config.docker_url, node_id, on_change=self._facts_changed,
                                on_gateway=self._gateway_changed)
        self.nftables = nftables = backends.resolve(config.backend) == "nftables"
        # Its thread also programs the reply routes of source-keeping services' local tasks, with
        # either backend; disabled (--no-fast-path, or ipvs) it empties the container tables an
        # earlier run left.
        self.containers = LocalContainers(make_api, config.docker_url, on_change=self._containers_changed)
        self.fast_path: Optional[FastPath] = FastPath(config.namespaces, self.containers,
                                                      max_containers=config.fast_path_max_containers,
                                                      enabled=config.fast_path and nftables,
                                                      source_routes=SourceRoutes(config.source_ip))
        if config.fast_path and not nftables:
            log.info("the VIP fast path is nftables-only: with the ipvs backend containers reach VIPs "
                     "through the LB namespace")
        self.reporter = Reporter(self.client, self.facts.report)
        self.http = HttpService(config.listen, {("GET", "/healthz"): self._healthz,
                                                ("GET", "/metrics"): self._metrics}, token=None)
        self.follower = ClusterFollower(node_id)
        self.version = 0  # of the snapshot the follower holds
        self.plan: Optional[NodePlan] = None
        self.due: Optional[float] = None  # monotonic time of the next sync that no snapshot will trigger
        self.stopping = threading.Event()  # run()'s stop, once it runs
        self.warnings: set[str] = set()
        self.last_loop = time.monotonic()
        self.applying = threading.Lock()  # held while the kernel is written, and while leaving it

    def _facts_changed(self, report: dict) -> None:
        self.reporter.changed()

    def _gateway_changed(self, address: str) -> None:
        """ingress_sbox has a new address (dockerd made it again): published ports must go there
        now, not at the next snapshot, which may be long in coming."""
        with self.applying:
            if self.stopping.is_set() or self.plan is None or host_forward(self.plan) in (None, address):
                return
            log.info("published ports now forwarded to ingress_sbox at %s: re-planning", address)
            self._sync_or_retry()

    def _containers_changed(self) -> None:
        if self.fast_path is not None:
            self.fast_path.containers_changed()

    def _healthz(self, request):
        ok, details = self.health.status()
        details["node_id"] = self.node_id
        details["fast_path"] = self.fast_path.status() if self.fast_path is not None else {"enabled": False}
        if not self.nftables:
            details["fast_path"]["why"] = "nftables only"
        details["controller_url"] = self.client.current_url
        return (200 if ok else 503), details, None

    def _metrics(self, request):
        content_type, data = self.metrics.render()
        return 200, data, content_type

    def run(self, stop: threading.Event, notifier: Notifier, leave: Callable[[], None] = lambda: None) -> None:
        """Follow and apply until `stop`; then `leave()` (the --on-stop policy) once no apply runs.

        The loop runs on its own thread: a SIGTERM must not wait for a long poll (25 s) to end, or
        Docker and systemd kill the agent before it can leave the node as it was asked to."""
        self.stopping = stop
        self.http.start()
        self.facts.start()
        if self.fast_path is not None:
            self.containers.start()
            self.fast_path.start()
        self.reporter.start()
        self.reporter.changed()
        # One loop pass may wait a long-poll plus the request timeout on every controller in turn.
        allowance = (LONG_POLL + self.client.timeout + 5) * len(self.config.controllers) + 10
        watchdog = Watchdog(notifier, alive=lambda: time.monotonic() - self.last_loop < allowance).start()
        notifier.ready()
        log.info("agent for node %s following %s", self.node_id, ", ".join(self.config.controllers))
        failure: list[BaseException] = []
        loop = threading.Thread(target=self._loop_catching, args=(stop, notifier, failure), name="follow", daemon=True)
        loop.start()
        try:
            while not stop.wait(0.5) and loop.is_alive():
                pass
            if failure:
                raise failure[0]
        finally:
            with self.applying:  # the apply under way ends; no later one starts (the loop sees `stop`)
                stop.set()
                notifier.stopping()
                for part in (watchdog, self.reporter, self.facts, self.http):
                    part.stop()
                if self.fast_path is not None:
                    self.fast_path.stop()
                    self.containers.stop()
                if not failure:
                    leave()
            loop.join(0.5)  # a long poll may still hold it: it is a daemon thread, gone with the process
            self.client.close()

    def _loop_catching(self, stop: threading.Event, notifier: Notifier, failure: list) -> None:
        try:
            self._loop(stop, notifier)
        except BaseException as err:  # noqa: BLE001 - handed to run(), which raises it
            failure.append(err)

    def _await_facts(self, stop: threading.Event) -> None:
        """Wait (bounded) for the first read of the local dockerd.  Until then the address published
        ports are forwarded to is a guess (172.18.0.2): where ingress_sbox has another one (an
        operator's docker_gwbridge subnet), a first apply with the guess sent every connection to
        the node's published ports nowhere until the next snapshot (issue 18)."""
        deadline = time.monotonic() + FACTS_WAIT
        while not stop.is_set() and not self.facts.ready.wait(0.2):
            if time.monotonic() >= deadline:
                log.warning("local dockerd %s not read after %.0f s: published ports go to %s until it is",
                            self.config.docker_url, FACTS_WAIT, self.config.ingress_gateway)
                return

    def _loop(self, stop: threading.Event, notifier: Notifier) -> None:
        backoff = Backoff(first=0.5, cap=5.0)
        self._await_facts(stop)
        while not stop.is_set():
            self.last_loop = time.monotonic()
            due = self.due
            wait = LONG_POLL if due is None else max(0.0, min(LONG_POLL, due - time.monotonic()))
            fresh = False
            try:
                got = self.client.follow_update(self.follower.since(), wait, epoch=self.follower.epoch)
                if self.health.status()[1]["controller"]["reachable"] is not True:
                    log.info("controller %s reachable", self.client.current_url)
                    self.reporter.changed()  # a restarted controller needs this node's facts now
                self.health.controller_ok()
                self.metrics.controller_up.set(1)
                backoff.reset()
            except ControllerError as err:
                self._unreachable(err, isinstance(err, ControllerAuthError))
                stop.wait(backoff.next_delay())
                got = None
            with self.applying:  # the follower is also planned from by _gateway_changed
                if got is not None:
                    fresh = self._take(got)
                due = self.due
                synced = self.follower.planner is not None and (fresh or (due is not None and time.monotonic() >= due))
                if synced:
                    if stop.is_set():
                        return
                    self._sync_or_retry()
            if synced:
                notifier.status(f"snapshot {self.version} applied" if self.health.status()[0] else "behind")

    def _sync_or_retry(self) -> None:
        """sync(), holding `applying`; a failure is retried in RETRY s."""
        try:
            self.due = self.sync()
        except Exception as err:  # noqa: BLE001 - never die with the kernel half-known: retry
            log.exception("sync failed; retrying in %.0f s", RETRY)
            self.health.apply_failed(f"sync failed: {err!r}")
            self.due = time.monotonic() + RETRY

    def _unreachable(self, err: Exception, auth: bool) -> None:
        was = self.health.status()[1]["controller"]["reachable"]
        self.health.controller_unreachable(str(err))
        self.metrics.controller_up.set(0)
        if was is not False:
            log.error("controller unreachable%s: %s; keeping the kernel state as it is",
                      " (token refused)" if auth else "", err)

    def _options(self) -> PlanOptions:
        return PlanOptions(now=time.time(), drain_grace=self.config.drain_grace,
                           ingress_gateway=self.facts.ingress_gateway or self.config.ingress_gateway,
                           source_ip=self.config.source_ip)

    def _take(self, update: Update) -> bool:
        self.health.received(update.version)
        try:
            taken = self.follower.take_update(update, self._options())
        except snapshot.SnapshotError as err:
            log.error("snapshot %d refused, keeping the last one: %s", update.version, err)
            self.health.apply_failed(f"snapshot {update.version}: {err}")
            return False
        if not taken:
            log.warning("delta from version %s does not apply to version %d: asking for the whole snapshot",
                        update.since, self.version)
            return False
        self.version = update.version
        return True

    def sync(self) -> Optional[float]:
        """Plan and apply; the monotonic time of the next sync a timer needs, or None."""
        started = time.monotonic()
        if not self.follower.node_known():
            self.health.apply_failed(f"node {self.node_id} is not in the snapshot")
            return started + RETRY
        options = self._options()
        plan = self.follower.plan(options)
        if self.fast_path is not None:  # with the cluster only when a task needs reply routes (issue 21)
            keeps = any(p.keep_source for ns in plan.namespaces if ns.role == "ingress" for p in ns.ports)
            self.fast_path.plan_changed(plan, self.follower.planner.cluster() if keeps else None)
        for warning in sorted(set(plan.warnings) - self.warnings):
            log.warning("%s", warning)
        self.warnings = set(plan.warnings)
        errors = {}
        try:
            self.applier.layout = self.config.namespaces.layout()
        except (OSError, ValueError) as err:
            errors["layout"] = f"cannot find Docker's namespaces: {err}"
        else:
            errors.update(self.applier.apply(plan).errors)
            errors.update(self.extras.apply(plan, self.applier.layout, skip=set(errors)))
        self.plan = plan
        self.metrics.sync_duration.observe(time.monotonic() - started)
        self.metrics.set_backends(_backend_counts(plan))
        self.metrics.set_panic(sorted({e.service for ns in plan.namespaces for e in ns.vips + ns.ports if e.panic}))
        for key, message in sorted(errors.items()):
            self.metrics.sync_failures.labels(namespace=key).inc()
            log.warning("%s: %s", key, message)
        if errors:
            self.health.apply_failed("; ".join(f"{k}: {v}" for k, v in sorted(errors.items())))
            return started + RETRY
        self.health.applied(self.version)
        self.metrics.snapshot_version.set(self.version)
        self.metrics.last_successful_sync.set(time.time())
        return _drain_deadline(plan, options, self.follower)


def host_forward(plan: NodePlan) -> Optional[str]:
    """Where the plan sends published ports from the node's own namespace (None: it has none)."""
    return next((ns.forward_to for ns in plan.namespaces if ns.role == "host"), None)


def _backend_counts(plan: NodePlan) -> dict:
    """Per service, how many distinct tasks this node sends to, by state (a task reached both
    by VIP and by published port counts once; active wins over draining)."""
    tasks: dict[str, dict[str, str]] = {}
    for ns in plan.namespaces:
        for entry in ns.vips + ns.ports:
            states = tasks.setdefault(entry.service, {})
            for backend in entry.backends:
                if states.get(backend.task_id) != "active":
                    states[backend.task_id] = backend.state
    counts: dict[str, dict[str, int]] = {}
    for service, states in tasks.items():
        counts[service] = {}
        for state in states.values():
            counts[service][state] = counts[service].get(state, 0) + 1
    return counts


def _drain_deadline(plan: NodePlan, options: PlanOptions, follower: ClusterFollower) -> Optional[float]:
    """When the earliest draining backend's grace ends (monotonic), so it is removed on time."""
    draining = {b.task_id for ns in plan.namespaces for e in ns.vips + ns.ports for b in e.backends
                if b.state == DRAINING}
    if not draining:
        return None
    ends = [task.since + options.drain_grace for task in map(follower.task, draining) if task is not None]
    if not ends:
        return None
    return time.monotonic() + max(0.0, min(ends) - options.now) + 0.05
