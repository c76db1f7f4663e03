"""What only a node's own dockerd knows: its task containers' health, and its LB endpoint addresses.

Container health exists only on the node running the container (`health_status` events), and a
node's `lb-<network>` endpoint address only in that node's network inspect.  The agent follows
both and reports them to the controller(s) at once on every change, as a NodeReport dict:
    {"node_id", "containers": {task_id: {"health", "stopping"}}, "lb_addresses": {net_id: ip}, "sent_at"}
A container that was killed or died stays in the report as stopping for `stopped_ttl`, so the
controller stops sending it new connections before the manager's task state catches up.
"""
from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from types import MappingProxyType
from typing import Callable, Optional

from docker.errors import NotFound

from .convert import TASK_LABEL, is_swarm_overlay
from .events import EventFollower

log = logging.getLogger(__name__)
LOCAL_EVENTS = MappingProxyType({"type": ("container", "network")})
STOPPING_ACTIONS = ("die", "stop", "destroy", "oom")
# A `kill` event is a stop only with a signal that stops: SIGTERM, SIGKILL or the container's
# own stop signal.  `docker kill -s HUP` (reload your config) must not drain a healthy task.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGKILL)


def signal_number(value) -> int:
    """A signal as Docker writes it ("15", "SIGTERM", "TERM", None) as a number; 0 if unknown."""
    text = str(value or "").strip().upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signal.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        return 0
HEALTH_STATES = ("starting", "healthy", "unhealthy")


def container_health(inspected: dict) -> str:
    health = ((inspected.get("State") or {}).get("Health") or {}).get("Status", "")
    return health if health in HEALTH_STATES else "none"


def lb_endpoint_address(network: dict) -> Optional[str]:
    """This node's load-balancer address on a network: Docker's ingress-sbox or lb-<name>."""
    wanted = ("ingress-sbox",) if network.get("Ingress") else (f"lb-{network.get('Name')}",)
    for key, endpoint in (network.get("Containers") or {}).items():
        if key in wanted or endpoint.get("Name") == f"{network.get('Name')}-endpoint":
            address = (endpoint.get("IPv4Address") or "").split("/", 1)[0]
            if address:
                return address
    return None


class LocalFacts:
    def __init__(self, make_api: Callable, endpoint: str, node_id: str,
                 on_change: Callable[[dict], None], stopped_ttl: float = 30.0, refresh: float = 10.0,
                 on_gateway: Callable[[str], None] = lambda address: None):
        self.make_api, self.endpoint, self.node_id = make_api, endpoint, node_id
        self.on_change, self.stopped_ttl, self.refresh = on_change, stopped_ttl, refresh
        # The gateway is not in the report (no other node needs it) but this node's plan is made
        # with it: a new one (ingress_sbox made again by dockerd) must re-plan at once.
        self.on_gateway = on_gateway
        self.lock = threading.Lock()  # guards the facts
        # One full read or event at a time: a read taken before an event must not be written after it.
        self.serial = threading.RLock()
        self.ingress_gateway = ""  # ingress_sbox's address on docker_gwbridge: where published ports go
        self.containers: dict[str, dict] = {}  # task id -> {"health", "stopping"}
        self.stopped_at: dict[str, float] = {}  # task id -> when it began stopping
        self.lb_addresses: dict[str, str] = {}
        self.last_error = ""
        self._stop = threading.Event()
        self.ready = threading.Event()  # set after the first full read: never report a blank node
        self._client = None
        self.events = EventFollower(make_api, LOCAL_EVENTS, self._on_event, self._resync, endpoint)
        self.thread = threading.Thread(target=self._periodic, name="local-refresh", daemon=True)

    def start(self) -> None:
        self.events.start()
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.events.stop()

    def report(self) -> Optional[dict]:
        """The node report, or None before the first full read (an empty report would tell the
        controller this node has no containers and no lb endpoints)."""
        if not self.ready.is_set():
            return None
        with self.lock:
            return {"node_id": self.node_id, "containers": {k: dict(v) for k, v in self.containers.items()},
                    "lb_addresses": dict(self.lb_addresses), "sent_at": time.time()}

    def _periodic(self) -> None:
        while not self._stop.wait(self.refresh):
            self._resync()

    def _resync(self) -> None:
        """Full re-read: after (re)connecting to the daemon, and periodically as a safety net."""
        with self.serial:
            self._resync_serial()

    def _resync_serial(self) -> None:
        try:
            if self._client is None:
                self._client = self.make_api()
            api = self._client
            containers = self._read_containers(api)
            addresses, gateway = self._read_lb_addresses(api), self._read_gateway(api)
        except Exception as err:  # noqa: BLE001 - daemon outage: keep what we knew
            self._client = None
            self.last_error = f"{self.endpoint}: {err}"
            log.warning("local docker %s: %s (keeping the last facts)", self.endpoint, err)
            return
        self.last_error = ""
        now = time.time()
        with self.lock:
            for task_id, since in list(self.stopped_at.items()):
                if task_id not in containers and now - since < self.stopped_ttl:
                    containers[task_id] = {"health": self.containers.get(task_id, {}).get("health", "none"),
                                           "stopping": True}
                elif now - since >= self.stopped_ttl:
                    del self.stopped_at[task_id]
            changed = containers != self.containers or addresses != self.lb_addresses or not self.ready.is_set()
            self.containers, self.lb_addresses = containers, addresses
        self._set_gateway(gateway)  # before `ready`: an agent waiting on it plans with this address
        self.ready.set()
        if changed:
            self.on_change(self.report())

    def _set_gateway(self, gateway: str) -> None:
        """Keep a newly read ingress_sbox address ("" = none read: keep the last) and say so."""
        if not gateway or gateway == self.ingress_gateway:
            return
        if self.ingress_gateway:
            log.info("docker_gwbridge: ingress-sbox moved from %s to %s", self.ingress_gateway, gateway)
        self.ingress_gateway = gateway
        self.on_gateway(gateway)

    def _stops(self, actor: dict, sent) -> bool:
        """Whether a kill with signal `sent` stops the container (its stop signal is read from
        dockerd; when that fails, only SIGTERM and SIGKILL count)."""
        number = signal_number(sent)
        if number in STOP_SIGNALS:
            return True
        try:
            api = self._client or self.make_api()
            configured = ((api.inspect_container(actor.get("ID", "")).get("Config") or {}).get("StopSignal"))
        except Exception as err:  # noqa: BLE001 - gone or unreachable: fall back to the defaults
            log.info("kill signal %s for %s: cannot read its stop signal (%s)", sent, actor.get("ID", "?")[:12], err)
            return False
        return bool(configured) and signal_number(configured) == number

    def _read_containers(self, api) -> dict[str, dict]:
        found = {}
        for summary in api.containers(filters={"label": TASK_LABEL}):
            task_id = (summary.get("Labels") or {}).get(TASK_LABEL)
            if not task_id:
                continue
            entry = self._read_container(api, summary["Id"], task_id)
            if entry is not None:  # None: removed between the list and the inspect
                found[task_id] = entry
        return found

    def _read_container(self, api, container_id: str, task_id: str) -> Optional[dict]:
        try:
            inspected = api.inspect_container(container_id)
        except NotFound:
            return None
        running = (inspected.get("State") or {}).get("Running", False)
        return {"health": container_health(inspected), "stopping": not running or task_id in self.stopped_at}

    def _refresh_networks(self) -> None:
        """An overlay's lb endpoint may have been (re)created: re-read the lb addresses and the
        gateway only.  Every task start connects a network, so this runs once per start: it
        must not cost a read of every container (that made a burst of starts quadratic)."""
        try:
            api = self._client or self.make_api()
            addresses, gateway = self._read_lb_addresses(api), self._read_gateway(api)
        except Exception as err:  # noqa: BLE001 - daemon outage: the periodic full read recovers
            self._client = None
            self.last_error = f"{self.endpoint}: {err}"
            return
        with self.lock:
            changed = addresses != self.lb_addresses
            self.lb_addresses = addresses
        self._set_gateway(gateway)
        if changed and self.ready.is_set():
            self.on_change(self.report())

    def _read_started(self, container_id: str, task_id: str) -> None:
        """A task's container started: read that one container (its health check state)."""
        try:
            entry = self._read_container(self._client or self.make_api(), container_id, task_id)
        except Exception as err:  # noqa: BLE001 - daemon outage: the periodic full read recovers
            self._client = None
            self.last_error = f"{self.endpoint}: {err}"
            return
        if entry is None:
            return
        with self.lock:
            if self.containers.get(task_id) == entry:
                return
            self.containers[task_id] = entry
        if self.ready.is_set():
            self.on_change(self.report())

    def _read_lb_addresses(self, api) -> dict[str, str]:
        addresses = {}
        for network in api.networks(filters={"driver": "overlay"}):
            if not is_swarm_overlay(network):
                continue
            address = lb_endpoint_address(api.inspect_network(network["Id"]))
            if address:
                addresses[network["Id"]] = address
        return addresses

    @staticmethod
    def _read_gateway(api) -> str:
        try:
            bridge = api.inspect_network("docker_gwbridge")
        except Exception:  # noqa: BLE001 - no gwbridge yet (no ingress on this node): keep the default
            return ""
        endpoint = (bridge.get("Containers") or {}).get("ingress-sbox") or {}
        address = (endpoint.get("IPv4Address") or "").split("/", 1)[0]
        try:  # it ends up in a DNAT rule: only a real IPv4 address may
            return str(ipaddress.IPv4Address(address)) if address else ""
        except ValueError:
            log.warning("docker_gwbridge: ingress-sbox address %r is not an IPv4 address; ignored", address[:60])
            return ""

    def _on_event(self, event: dict) -> None:
        with self.serial:
            self._on_event_serial(event)

    def _on_event_serial(self, event: dict) -> None:
        if event.get("Type") == "network":
            self._refresh_networks() if self.ready.is_set() else self._resync()
            return
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        task_id = attributes.get(TASK_LABEL)
        if not task_id:
            return
        action = event.get("Action", "")
        with self.lock:
            entry = dict(self.containers.get(task_id, {"health": "none", "stopping": False}))
            if action.startswith("health_status"):
                entry["health"] = action.split(":", 1)[1].strip() if ":" in action else entry["health"]
            elif action.split(":")[0] in STOPPING_ACTIONS or (
                    action == "kill" and self._stops(event.get("Actor") or {}, attributes.get("signal"))):
                entry["stopping"] = True
                self.stopped_at.setdefault(task_id, time.time())
            elif action == "start":
                entry = None  # read that container: its health check state
            else:
                return
            if entry is not None:
                if entry == self.containers.get(task_id):
                    return
                self.containers[task_id] = entry
        if entry is None:
            self._read_started((event.get("Actor") or {}).get("ID", ""), task_id) if self.ready.is_set() \
                else self._resync()
        else:
            self.on_change(self.report())
