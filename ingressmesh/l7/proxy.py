"""`ingressmesh proxy`: the main process of every proxy-service task.

Follows the controller's snapshot (the agent's client: long-poll, token, fail-over), plans this
proxy's routes (routes.py), and drives HAProxy through the applier: endpoint changes by the
runtime API, route changes by a checked, seamless reload.  The listening sockets are this
process's (listeners.py), passed to every HAProxy it starts, so when HAProxy dies the kernel
queues new connections until the supervisor thread has started it again; that thread also reaps
every orphan re-parented to this process (children.py: it is PID 1 of its container).  On SIGTERM
it keeps serving while the mesh takes the task out of every node (linger.py: at least
`stop_linger` seconds, then until no new connection comes, at most `stop_linger_max`), then stops
accepting and lets in-flight requests finish.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Union

from .. import model, snapshot
from ..arrival import ArrivalClock
from ..agent.controller_client import ControllerClient, ControllerError, Credentials
from ..daemon.http import HttpService
from ..daemon.sdnotify import Notifier
from ..plan import PlanOptions
from ..swarm.backoff import Backoff
from .applier import RouteApplier
from .backend_tls import BackendTlsCheck, BackendTlsProblem
from .cert_expiry import CertExpiry
from .children import Children, become_subreaper, describe
from .haproxy import HAProxy, HAProxyFiles, write_atomic
from . import runtime
from .linger import QUIET, Linger, linger
from .listeners import Listeners
from .metrics import ProxyMetrics
from .render import ProxySettings
from .routes import ProxyScope, RouteTable, next_change, plan_routes
from .state import state_document

log = logging.getLogger(__name__)
LONG_POLL = 25.0
BACKEND_TLS_EVERY = 3.0  # seconds between checks of verified TLS backends (each verdict kept 30 s)
LINGER_ENDS = {Linger.QUIET: f"no new connection for {QUIET:g} s", Linger.UNKNOWN: "HAProxy's counters were unreadable",
               Linger.MAXIMUM: "new connections still came at --stop-linger-max", Linger.FIXED: "--stop-linger"}
SUPERVISE_EVERY = 0.1  # seconds between looks at HAProxy (connections queue meanwhile) and at orphans


@dataclass(frozen=True)
class ProxyConfig:
    controllers: tuple[str, ...]
    workdir: str = "/run/ingressmesh-proxy"
    settings: ProxySettings = field(default_factory=ProxySettings)
    service_cluster: str = ""
    proxy_service: str = ""
    task_id: str = ""  # this task's swarm id: tells which networks the proxy has joined
    listen: tuple[str, int] = ("0.0.0.0", 9403)
    drain_grace: float = 10.0
    stop_linger: float = 2.0
    stop_linger_max: float = 10.0
    stop_timeout: float = 20.0
    haproxy_binary: str = "haproxy"


def own_networks(cluster: model.Cluster, task_id: str) -> Optional[frozenset[str]]:
    task = next((t for t in cluster.tasks if t.id == task_id), None) if task_id else None
    return frozenset(a.network_id for a in task.addresses) if task else None


class Proxy:
    def __init__(self, config: ProxyConfig, token: Union[str, Credentials]):
        self.config = config
        os.makedirs(config.workdir, mode=0o700, exist_ok=True)
        files = HAProxyFiles(config.workdir)
        credentials = Credentials.of(token)  # the token, and the CA of an https controller
        # Sticky cookies are keyed by a value every replica of the cluster shares and clients
        # never see: a hash of the token (the token itself never reaches HAProxy's config).
        cookie_key = hashlib.sha256(b"ingressmesh sticky cookies\0" + credentials.token.encode()).hexdigest()
        s = config.settings
        self.listeners = Listeners(s.bind_address, (s.http_port, s.https_port, s.stats_port))
        settings = replace(s, admin_socket=files.admin_socket, cookie_key=cookie_key,
                           listen_fds=self.listeners.fds())
        self.children = Children()
        haproxy = HAProxy(files, config.haproxy_binary, children=self.children,
                          pass_fds=tuple(fd for _, fd in settings.listen_fds))
        self.applier = RouteApplier(haproxy, settings)
        self.client = ControllerClient(list(config.controllers), credentials)
        self.metrics = ProxyMetrics()
        self.http = HttpService(config.listen, {("GET", "/healthz"): self._healthz,
                                                ("GET", "/metrics"): self._metrics,
                                                ("GET", "/v1/l7/state"): self._state}, token=credentials.token)
        self.lock = threading.Lock()  # applier and supervisor never touch HAProxy at once
        self.version = 0
        self.cluster: Optional[model.Cluster] = None
        self.table: Optional[RouteTable] = None
        self.swarm_refused: tuple[str, ...] = ()  # what the controller left out (the snapshot's "refused")
        self.stopping = False  # SIGTERM came: /healthz answers 503, routes still follow the controller
        self.closing = False  # past the linger: HAProxy is shutting down, nothing more is applied
        self.reload_requested = threading.Event()
        self.arrival = ArrivalClock()
        self._said: set[str] = set()
        self.backend_tls = BackendTlsCheck()
        self.backend_tls_problems: list[BackendTlsProblem] = []
        self.cert_expiry = CertExpiry()

    # -- HTTP -------------------------------------------------------------------------------
    def _healthz(self, request):
        serving = self.applier.haproxy.running and self.applier.table is not None
        details = {"serving": serving, "stopping": self.stopping, "snapshot_version": self.version,
                   "config_generation": self.applier.generation, "reloads": self.applier.haproxy.reloads,
                   "runtime_commands": self.applier.runtime_commands, "last_error": self.applier.last_error,
                   "controller": {"url": self.client.current_url, "reachable": self.client.reachable,
                                  "error": self.client.last_error},
                   "refused_services": [{"service": r.service, "reason": r.reason}
                                        for r in (self.table.refused if self.table else ())],
                   "refused_objects": list(self.swarm_refused),
                   "backend_tls_failures": self._backend_tls_rows()}
        return (200 if serving and not self.stopping else 503), details, None

    def _state(self, request):
        """The routes and each server as HAProxy serves it now (no secrets: addresses and names)."""
        from .state import with_live_state
        document = self._document()
        if self.applier.haproxy.running:
            try:
                document = with_live_state(document)
            except Exception as err:  # noqa: BLE001 - the HTTP answer says why, the proxy goes on
                document["live_error"] = str(err)
        return 200, document, None

    def _metrics(self, request):
        return 200, self.metrics.render_with(f"http://127.0.0.1:{self.applier.settings.stats_port}/metrics")[1], \
            self.metrics.render()[0]

    # -- main loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event, notifier: Notifier) -> None:
        become_subreaper()  # a killed HAProxy master's workers come to us, to be reaped
        self.http.start()
        # The threads' own stop, set after the linger: while a stopping proxy still accepts, its
        # routes keep following the controller and a dead HAProxy is still started again.
        halt = threading.Event()
        supervisor = threading.Thread(target=self._supervise, args=(halt,), name="haproxy-supervisor", daemon=True)
        supervisor.start()
        threading.Thread(target=self._check_backend_tls, args=(halt,), name="backend-tls", daemon=True).start()
        notifier.ready()
        log.info("proxy (service cluster %r) following %s", self.config.service_cluster or "(none)",
                 ", ".join(self.config.controllers))
        # The follow loop runs on its own thread: a long-poll in flight must not delay a stop.
        follower = threading.Thread(target=self._loop, args=(halt,), name="follow", daemon=True)
        follower.start()
        try:
            while not stop.wait(1.0) and follower.is_alive():
                pass
            if not stop.is_set():
                raise RuntimeError("the follow loop ended unexpectedly")  # exit non-zero: restarted
        finally:
            stop.set()
            self._stop_gracefully(halt)
            self.http.stop()
            self.client.close()

    def _loop(self, stop: threading.Event) -> None:
        backoff = Backoff(first=0.5, cap=5.0)
        due: Optional[float] = None
        followed = self.version
        while not stop.is_set():
            wait = LONG_POLL if due is None else max(0.0, min(LONG_POLL, due - time.monotonic()))
            try:
                got = self.client.follow(followed, wait)
                backoff.reset()
            except ControllerError as err:
                log.warning("controller: %s; HAProxy keeps its routes", err)
                stop.wait(backoff.next_delay())
                got = None
            fresh = False
            if got is not None:
                followed = got[0]  # a refused version is not asked for again (no busy loop)
                try:
                    cluster = self.arrival.stamp_all(snapshot.from_dict(got[1]))  # drains on our clock
                    self.cluster, self.version, fresh = cluster, got[0], True
                    self.swarm_refused = tuple(str(r) for r in got[1].get("refused") or ())
                    self.metrics.snapshot_version.set(self.version)
                    self.metrics.refused_objects.set(len(self.swarm_refused))
                except snapshot.SnapshotError as err:
                    log.error("snapshot %d refused, keeping the last one: %s", got[0], err)
            timer = due is not None and time.monotonic() >= due
            if self.cluster is not None and (fresh or timer):
                try:
                    due = self.sync()
                except Exception:  # noqa: BLE001 - keep serving what HAProxy has; try again soon
                    log.exception("applying snapshot %d failed; HAProxy keeps its routes, retrying", self.version)
                    due = time.monotonic() + 2.0

    def sync(self) -> Optional[float]:
        """Plan and apply; the monotonic time a draining server must be dropped, or None."""
        started = time.monotonic()
        options = PlanOptions(now=time.time(), drain_grace=self.config.drain_grace)
        scope = ProxyScope(self.config.service_cluster, own_networks(self.cluster, self.config.task_id),
                           self.config.proxy_service)
        table = plan_routes(self.cluster, scope, options)
        self._say(table)
        with self.lock:
            if self.closing:
                return None  # HAProxy is shutting down: nothing more to apply
            result = self.applier.apply(table)
        table = result.table or table  # with the refusals of unusable certificates
        self.table = table
        if result.how == "reload":
            self.metrics.reloads.inc()
        if result.how == "refused":
            self.metrics.refused_configs.inc()
        self.metrics.runtime_commands.inc(result.commands)
        self.metrics.config_generation.set(self.applier.generation)
        self.metrics.observe_table(table)
        self.metrics.observe_certificates(self.cert_expiry.rows(table))
        self.metrics.apply_duration.observe(time.monotonic() - started)
        self._write_state()
        if result.how == "refused":
            return time.monotonic() + 2.0  # try again (a transient failure, or the next snapshot fixes it)
        ends = next_change(self.cluster, table, options)
        return None if ends is None else time.monotonic() + max(0.0, ends - options.now) + 0.05

    def _say(self, table: RouteTable) -> None:
        """Log each refusal and note once, when it first appears."""
        lines = {f"service {r.service} refused: {r.reason}" for r in table.refused} | set(table.notes)
        for line in sorted(lines - self._said):
            log.warning("%s", line)
        self._said = lines

    def _backend_tls_rows(self) -> list[dict]:
        return [{"service": p.service, "task": p.address, "reason": p.reason} for p in self.backend_tls_problems]

    def _document(self) -> dict:
        document = state_document(self.applier, self.version, self.config.service_cluster)
        document["backend_tls_failures"] = self._backend_tls_rows()
        document["refused_objects"] = list(self.swarm_refused)  # the controller's: no VIP, no route
        document["certificates"] = self.cert_expiry.rows(self.table)  # per TLS host: source and expiry
        return document

    def _check_backend_tls(self, stop: threading.Event) -> None:
        """Every few seconds: which verified TLS backends' tasks are refused, logged once each."""
        while not stop.wait(BACKEND_TLS_EVERY):
            table = self.table
            if table is None:
                continue
            problems = self.backend_tls.run(table)
            if problems == self.backend_tls_problems:
                continue
            for problem in sorted(set(problems) - set(self.backend_tls_problems), key=BackendTlsProblem.line):
                log.warning("%s (HAProxy answers 503 for it)", problem.line())
            self.backend_tls_problems = problems
            self._write_state()

    def _write_state(self) -> None:
        document = self._document()
        try:
            write_atomic(os.path.join(self.config.workdir, "state.json"), json.dumps(document))
        except OSError as err:
            log.warning("cannot write state.json: %s", err)

    def _supervise(self, stop: threading.Event) -> None:
        """Starts HAProxy again when it died; reloads it when asked (SIGHUP); reaps orphans."""
        while not stop.wait(SUPERVISE_EVERY):
            for pid, status in self.children.reap():
                log.debug("reaped orphan process %d (%s)", pid, describe(status))
            with self.lock:
                if self.applier.haproxy.died and not self.closing:
                    log.error("haproxy exited with status %s; starting it again with the state it should have",
                              self.applier.haproxy.process.returncode)
                    self.metrics.haproxy_restarts.inc()
                    result = self.applier.reinstall()  # the config holds the runtime changes too
                    if result.error:
                        log.error("cannot start haproxy again: %s", result.error)
                if self.reload_requested.is_set() and not self.closing:
                    self.reload_requested.clear()
                    result = self.applier.reinstall()
                    log.info("reload requested (SIGHUP): %s%s", result.how, f" ({result.error})" if result.error else "")
                    if result.how == "reload":
                        self.metrics.reloads.inc()

    def _stop_gracefully(self, halt: threading.Event) -> None:
        self.stopping = True
        longest = max(self.config.stop_linger, self.config.stop_linger_max)
        if self.applier.haproxy.running and longest > 0:
            started = time.monotonic()
            log.info("stopping: serving %g-%g s more while the mesh drains this task", self.config.stop_linger, longest)
            why = linger(self._accepted, self.config.stop_linger, self.config.stop_linger_max)
            report = log.warning if why is Linger.MAXIMUM else log.info
            report("stopping: no longer accepting after %.1f s (%s)", time.monotonic() - started, LINGER_ENDS[why])
        halt.set()
        with self.lock:
            self.closing = True
            self.listeners.close()  # once HAProxy closes its copies, new connections are refused
            self.applier.haproxy.soft_stop(self.config.stop_timeout)
        self.children.reap()
        log.info("stopped")

    def _accepted(self, timeout: float) -> Optional[int]:
        try:
            return runtime.accepted_connections(self.applier.haproxy.files.admin_socket, timeout=timeout)
        except runtime.RuntimeApiError as err:
            log.warning("cannot count new connections while stopping: %s", err)
            return None
