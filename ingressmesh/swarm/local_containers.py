"""The containers on this node and the networks they are attached to, for the VIP fast path.

The agent programs each container's own namespace (plan_containers.py), so it needs, per
running container: its name, the ids of the networks it is on, and its namespace (Docker's
sandbox key, `<exec-root>/netns/<sandbox id>`).  Only dockerd knows them.  A container start
or a network (dis)connect reads that one container; a stop, die or destroy drops it; a full
re-read runs after (re)connecting to dockerd and every `refresh` seconds as a safety net.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Optional

from docker.errors import NotFound

from .events import EventFollower

log = logging.getLogger(__name__)
EVENTS = MappingProxyType({"type": ("container", "network")})
GONE = ("die", "stop", "destroy")  # not "oom": a process was killed, the container may well run on


@dataclass(frozen=True)
class ContainerFacts:
    id: str
    name: str
    network_ids: tuple[str, ...]
    sandbox: str  # the namespace file's name under <exec-root>/netns
    fast_path: str = ""  # its label io.ingressmesh.fast_path: "true" opts in despite own rules, "false" out
    task_id: str = ""  # a swarm task's id (label com.docker.swarm.task.id): its reply routes (issue 21)


FAST_PATH_LABEL = "io.ingressmesh.fast_path"


def container_facts(inspected: dict) -> Optional[ContainerFacts]:
    """What the fast path needs from `docker inspect`; None for a container that is not running
    or has no namespace of its own (host networking, `--network container:…`)."""
    if not (inspected.get("State") or {}).get("Running"):
        return None
    settings = inspected.get("NetworkSettings") or {}
    sandbox = os.path.basename(settings.get("SandboxKey") or "")
    networks = settings.get("Networks") or {}
    ids = tuple(sorted(n.get("NetworkID", "") for n in networks.values() if n.get("NetworkID")))
    mode = ((inspected.get("HostConfig") or {}).get("NetworkMode") or "")
    if not sandbox or not ids or mode == "host" or mode.startswith("container:"):
        return None
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    choice = str(labels.get(FAST_PATH_LABEL, "")).strip().lower()
    return ContainerFacts(inspected.get("Id", ""), (inspected.get("Name") or "").lstrip("/"), ids, sandbox, choice,
                          str(labels.get("com.docker.swarm.task.id", "")))


class LocalContainers:
    def __init__(self, make_api: Callable, endpoint: str, on_change: Callable[[], None], refresh: float = 10.0):
        self.make_api, self.endpoint, self.on_change, self.refresh = make_api, endpoint, on_change, refresh
        self.lock = threading.Lock()
        self.serial = threading.RLock()  # one read or event at a time
        self.known: dict[str, ContainerFacts] = {}
        self.last_error = ""
        self._client = None
        self._stop = threading.Event()
        self.events = EventFollower(make_api, EVENTS, self._on_event, self._resync, endpoint + " (containers)")
        self.thread = threading.Thread(target=self._periodic, name="containers-refresh", daemon=True)

    def start(self) -> None:
        self.events.start()
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.events.stop()

    def current(self) -> tuple[ContainerFacts, ...]:
        with self.lock:
            return tuple(self.known.values())

    def _api(self):
        if self._client is None:
            self._client = self.make_api()
        return self._client

    def _periodic(self) -> None:
        while not self._stop.wait(self.refresh):
            self._resync()

    def _resync(self) -> None:
        with self.serial:
            try:
                api = self._api()
                found = {}
                for summary in api.containers():
                    facts = self._read(api, summary["Id"])
                    if facts is not None:
                        found[facts.id] = facts
            except Exception as err:  # noqa: BLE001 - daemon outage: keep what we knew
                self._client, self.last_error = None, f"{self.endpoint}: {err}"
                log.warning("local docker %s: %s (keeping the last container list)", self.endpoint, err)
                return
            self.last_error = ""
            self._set(found)

    @staticmethod
    def _read(api, container_id: str) -> Optional[ContainerFacts]:
        try:
            return container_facts(api.inspect_container(container_id))
        except NotFound:
            return None

    def _set(self, found: dict) -> None:
        with self.lock:
            changed = found != self.known
            self.known = found
        if changed:
            self.on_change()

    def _on_event(self, event: dict) -> None:
        with self.serial:
            actor = event.get("Actor") or {}
            action = (event.get("Action") or "").split(":")[0]
            if event.get("Type") == "network":
                container_id = (actor.get("Attributes") or {}).get("container", "")
                if action not in ("connect", "disconnect") or not container_id:
                    return
            elif action in GONE:
                with self.lock:
                    found = dict(self.known)
                found.pop(actor.get("ID", ""), None)
                self._set(found)
                return
            elif action == "start":
                container_id = actor.get("ID", "")
            else:
                return
            try:
                facts = self._read(self._api(), container_id)
            except Exception as err:  # noqa: BLE001 - daemon outage: the periodic read recovers
                self._client, self.last_error = None, f"{self.endpoint}: {err}"
                return
            with self.lock:
                found = dict(self.known)
            found.pop(container_id, None)
            if facts is not None:
                found[facts.id] = facts
            self._set(found)
