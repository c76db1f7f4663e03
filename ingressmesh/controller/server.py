"""The controller's HTTP API: the snapshot by long-poll, node reports in, health and metrics.

    GET  /v1/snapshot?since=V&wait=S  200 {"version", "cluster"} once newer than V, else 304 after S s
         …&delta=1&epoch=E            200 {"version", "epoch", "since": V, "delta"} (only what changed
                                      since V, see delta.py) when V is recent and E is this
                                      controller's incarnation (every answer names it), else the
                                      whole snapshot
    POST /v1/report                   a node report (validated here) -> on_report(report) -> 204;
                                      {"node_id", "same_as": digest, "sent_at"} repeats the last
                                      one (report_digest.py): 204, or 409 when it is not held;
                                      409 too for a report older than the last one accepted from
                                      its node ("seq", controller/report_order.py)
    GET  /healthz                     200 / 503 with the controller's own health as JSON
    GET  /metrics                     Prometheus text

/v1/ takes the cluster secret (everything), a node's credential (the snapshot, and reports
about that node only: 403 for another node's) or the reader credential (the snapshot only);
see daemon/credentials.py.
"""
from __future__ import annotations

import asyncio
import ipaddress
import math
import re
import ssl
from types import MappingProxyType
from typing import Any, Callable, Optional

from ..daemon.credentials import READER, ClusterAuth
from ..daemon.http import HttpService, Request, Response
from ..daemon.http_limits import Limits
from ..daemon.metrics import ControllerMetrics
from ..model import HEALTH_STATES
from ..report_digest import report_digest
from ..report_sequence import BOOT_PATTERN
from .longpoll import LongPoll
from .store import SnapshotStore

MAX_WAIT = 30.0  # long-poll cap: below common proxy/LB idle timeouts, short enough to notice a dead peer
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # the snapshot's id syntax
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
# The eight possible container entries, shared by every report: 100,000 containers cost eight
# small dicts, not 100,000.  Nobody modifies a report once validated.
_ENTRIES = MappingProxyType({(h, s): {"health": h, "stopping": s} for h in HEALTH_STATES for s in (False, True)})

HealthCheck = Callable[[], tuple[bool, dict]]


class ReportError(ValueError):
    """A node report that cannot be used; the message starts with the bad field's path."""


class ReportUnknown(ReportError):
    """A heartbeat naming a report this controller does not hold: the agent sends it whole."""


class ReportStale(ReportError):
    """A report older than the last one accepted from its node (report_order.py): 409, and the
    agent's next report (a heartbeat refused so is sent whole at once) is newer."""


class ControllerServer:
    """Serves `store` to agents and hands their validated reports to `on_report`.

    `health` gives (ok, details) for /healthz, e.g. the age of the last swarm resync; by
    default the controller is healthy once it has published a snapshot.  `on_report` may raise
    ReportError to refuse a report (400) for reasons only the merge knows.  `token` is the
    cluster secret; `tls` (daemon/tls.py) makes it HTTPS only.
    """

    def __init__(self, store: SnapshotStore, on_report: Callable[[dict], None], token: str,
                 metrics: ControllerMetrics, address: tuple[str, int],
                 health: Optional[HealthCheck] = None, tls: Optional[ssl.SSLContext] = None,
                 limits: Limits = Limits()):
        self.store, self.metrics = store, metrics
        self._on_report = on_report
        self._health = health or self._default_health
        self.longpoll = LongPoll(store)
        self.http = HttpService(address, {
            ("GET", "/v1/snapshot"): self._snapshot,
            ("POST", "/v1/report"): self._report,
            ("GET", "/healthz"): self._healthz,
            ("GET", "/metrics"): self._metrics,
        }, ClusterAuth(token), limits=limits, tls=tls)

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> "ControllerServer":
        self.http.start()
        return self

    def stop(self) -> None:
        """Stops serving; long-polls still waiting are answered 304 first."""
        self.longpoll.close()
        self.http.stop()

    async def _snapshot(self, request: Request) -> Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return 400, {"error": f"since: {request.query['since']!r} is not an integer version"}, None
        try:
            wait = float(request.query.get("wait", "0"))
        except ValueError:
            wait = math.nan
        if not math.isfinite(wait) or wait < 0:
            return 400, {"error": f"wait: {request.query['wait']!r} is not a number of seconds >= 0"}, None
        if await self.longpoll.wait(since, min(wait, MAX_WAIT)) is None:
            return 304, None, None
        # Encoding (27 MB for a whole snapshot at 10,000 services) runs off the event loop.
        found = await asyncio.get_running_loop().run_in_executor(
            None, self.store.body_since, since, request.query.get("delta") == "1", request.query.get("epoch"))
        if found is None:
            return 304, None, None
        return 200, found[1], "application/json"

    def _report(self, request: Request) -> Response:
        principal = request.principal
        if principal is None or principal.role == READER:  # refused before its body is looked at
            why = principal.may_report_for("") if principal else "no credential"
            return 403, {"error": f"report refused: {why}"}, None
        try:
            report = validate_report(request.json)
            problem = principal.may_report_for(report["node_id"])
            if problem is not None:
                return 403, {"error": f"report refused: {problem}"}, None
            self._on_report(report)
        except (ReportUnknown, ReportStale) as exc:
            return 409, {"error": f"report: {exc}"}, None
        except ReportError as exc:
            return 400, {"error": f"report: {exc}"}, None
        return 204, None, None

    def _healthz(self, request: Request) -> Response:
        ok, details = self._health()
        version, cluster = self.store.current()
        body = {"ok": bool(ok), "snapshot_version": version if cluster is not None else None, **details}
        return (200 if ok else 503), body, None

    def _metrics(self, request: Request) -> Response:
        content_type, data = self.metrics.render()
        return 200, data, content_type

    def _default_health(self) -> tuple[bool, dict]:
        _, cluster = self.store.current()
        return cluster is not None, {} if cluster is not None else {"problem": "no snapshot published yet"}


def validate_report(data: Any) -> dict:
    """The report with exactly the known fields, or ReportError naming the first bad one.

    Unknown fields are dropped, not refused, so a newer agent can talk to an older controller
    during a rolling upgrade.
    """
    if not isinstance(data, dict):
        raise ReportError(f"expected a JSON object, got {_kind(data)}")
    node_id = _field(data, "node_id", "")
    if not isinstance(node_id, str) or not _ID.match(node_id):
        raise ReportError(f"node_id: {node_id!r} is not a node id")
    if "same_as" in data:  # a heartbeat: "nothing changed since the report with this digest"
        same_as = data["same_as"]
        if not isinstance(same_as, str) or not _DIGEST.match(same_as):
            raise ReportError(f"same_as: {str(same_as)[:80]!r} is not a report digest (64 hex digits)")
        return _with_seq({"node_id": node_id, "same_as": same_as, "sent_at": _sent_at(data)}, data)
    containers = _field(data, "containers", "")
    if not isinstance(containers, dict):
        raise ReportError(f"containers: expected an object of task id -> state, got {_kind(containers)}")
    checked_containers = {}
    for task_id, state in containers.items():
        where = f"containers[{task_id!r}]"
        if not _ID.match(task_id):
            raise ReportError(f"{where}: {task_id!r} is not a task id")
        if not isinstance(state, dict):
            raise ReportError(f"{where}: expected an object, got {_kind(state)}")
        health = _field(state, "health", where + ".")
        if health not in HEALTH_STATES:
            raise ReportError(f"{where}.health: {health!r} is not one of {', '.join(HEALTH_STATES)}")
        stopping = _field(state, "stopping", where + ".")
        if not isinstance(stopping, bool):
            raise ReportError(f"{where}.stopping: expected true or false, got {_kind(stopping)}")
        checked_containers[task_id] = _ENTRIES[(health, stopping)]  # shared: never modified
    lb_addresses = _field(data, "lb_addresses", "")
    if not isinstance(lb_addresses, dict):
        raise ReportError(f"lb_addresses: expected an object of network id -> address, got {_kind(lb_addresses)}")
    for network_id, address in lb_addresses.items():
        where = f"lb_addresses[{network_id!r}]"
        if not _ID.match(network_id):
            raise ReportError(f"{where}: {network_id!r} is not a network id")
        try:
            ipaddress.IPv4Address(address)
        except (ipaddress.AddressValueError, ValueError, TypeError):
            raise ReportError(f"{where}: {address!r} is not an IPv4 address") from None
    report = {"node_id": node_id, "containers": checked_containers,
              "lb_addresses": dict(lb_addresses), "sent_at": _sent_at(data)}
    report = _with_seq(report, data)
    report["digest"] = report_digest(report)
    return report


def _sent_at(data: dict) -> float:
    sent_at = _field(data, "sent_at", "")
    if isinstance(sent_at, bool) or not isinstance(sent_at, (int, float)) or not math.isfinite(sent_at):
        raise ReportError(f"sent_at: expected seconds since the epoch, got {sent_at!r}")
    return float(sent_at)


def _with_seq(report: dict, data: dict) -> dict:
    seq = _seq(data)
    return report if seq is None else {**report, "seq": seq}


def _seq(data: dict) -> Optional[dict]:
    """The report's place in its node's order (report_sequence.py); None from an older agent."""
    seq = data.get("seq")
    if seq is None:
        return None
    if not isinstance(seq, dict):
        raise ReportError(f"seq: expected an object {{boot, ns}}, got {_kind(seq)}")
    boot, ns = seq.get("boot"), seq.get("ns")
    if not isinstance(boot, str) or not BOOT_PATTERN.match(boot):
        raise ReportError(f"seq.boot: {str(boot)[:80]!r} is not a boot id")
    if isinstance(ns, bool) or not isinstance(ns, int) or not 0 <= ns < 1 << 63:
        raise ReportError(f"seq.ns: expected nanoseconds on the boot clock (an integer >= 0), got {ns!r}")
    return {"boot": boot, "ns": ns}


def _field(data: dict, key: str, prefix: str) -> Any:
    if key not in data:
        raise ReportError(f"{prefix}{key}: missing")
    return data[key]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), f"{type(value).__name__} {value!r}")
