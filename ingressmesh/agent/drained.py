"""A drained node keeps its routing mesh, and keeps following the swarm, in the stack install.

Swarm shuts down every task on a drained node, a global service's too: swarmkit's global
orchestrator treats a drained node like a down one (moby/swarmkit#2321), there is no placement or
toleration that keeps a task there.  Plain containers are left running (docker/docs#5800), and
Docker's own mesh keeps answering on a drained node (dockerd does it).  So when the stack's agent
task is told to stop, it asks the controllers whether its node is drained, following and applying
on meanwhile (its node's own tasks are being stopped too):

- drained: it starts a *resident agent* (resident_container.py: a plain container, restart always,
  the same image and mounts) and waits until that one holds its lease; the stopping task then sees
  a newer agent and hands the rules over (exactly a rolling update's hand-over), and the resident
  takes them over and follows the controllers for as long as the node stays drained;
- not drained (`docker stack rm`, `docker service rm`, an update: a newer agent already waits),
  the stop policy runs as before.

When the node is active again Swarm starts a new agent task; before it touches the kernel it
retires the resident (restart policy off, stop: the resident keeps the rules, remove) and takes
the rules over from it.  A resident is never made when no controller says "drain": with no
answer the task's last snapshot decides.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from .controller_client import ControllerClient, ControllerError
from .node_lease import NodeLease

log = logging.getLogger(__name__)
DRAIN_WAIT = 5.0      # seconds a stopped task waits for a snapshot saying its node is drained
RESIDENT_WAIT = 15.0  # seconds it gives the resident to take its lease (a Python start, in a container)


def availability(cluster: object, node_id: str) -> Optional[str]:
    """Node `node_id`'s availability in a snapshot's plain form, or None when it is not there."""
    nodes = cluster.get("nodes") if isinstance(cluster, dict) else None
    items = nodes.values() if isinstance(nodes, dict) else nodes if isinstance(nodes, list) else ()
    for node in items:
        if isinstance(node, dict) and node.get("id") == node_id:
            value = node.get("availability", "active")
            return value if isinstance(value, str) else None
    return None


def node_drained(client: ControllerClient, node_id: str, known: Optional[str], timeout: float = DRAIN_WAIT,
                 clock: Callable[[], float] = time.monotonic) -> bool:
    """Whether the controllers say `node_id` is drained now, or do within `timeout` seconds (a
    drain stops the task and reaches the controller at about the same time).  `known` is the
    availability in the snapshot the agent holds: the answer when no controller answers."""
    deadline = clock() + timeout
    since = 0  # the whole snapshot first: the current state, at once
    while True:
        try:
            update = client.follow_update(since, max(0.0, deadline - clock()) if since else 0.0, deltas=False)
        except ControllerError as err:
            log.info("no controller answers (%s): the last snapshot says this node is %s", err, known or "unknown")
            return known == "drain"
        if update is not None and update.cluster is not None:
            since = update.version
            if availability(update.cluster, node_id) == "drain":
                return True
        if clock() >= deadline:
            return False


def hand_to_resident(lease: NodeLease, start: Callable[[], str], timeout: float = RESIDENT_WAIT,
                     poll: float = 0.2) -> str:
    """Start the resident (`start()` -> its name), then wait until it holds a newer lease: the
    rules are its own from then on.  Whatever fails, the rules stay (a drained node routes on)."""
    try:
        name = start()
    except Exception as err:  # noqa: BLE001 - any failure: say it, keep the rules
        log.error("cannot start the resident agent (%s): keeping the rules as they are", err)
        return "kept (no resident agent)"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        newer = lease.newer_alive()
        if newer:
            log.info("node drained: resident agent %s holds %s, leaving the rules to it", name, ", ".join(newer))
            return "handed to the resident agent"
        time.sleep(poll)
    log.error("the resident agent %s took no lease in %.0f s: keeping the rules as they are", name, timeout)
    return "kept (the resident agent did not start)"


def known_availability(follower, node_id: str) -> Optional[str]:
    """This node's availability in the snapshot a ClusterFollower holds, or None."""
    node = follower.planner.nodes.get(node_id) if follower.planner is not None else None
    return node.availability if node is not None else None


class DrainedResident:
    """The agent task's side (`--drained-resident NAME --task-id ID`): retire residents when it
    starts, and hand the rules to a new resident when it is stopped on a drained node.

    `credential` is this node's own credential (the resident never gets the cluster secret),
    `ca_file` the CA the task checks the controllers with, if any (copied in as well)."""

    def __init__(self, name: str, task_id: str, docker_url: str, credential: str, ca_file: Optional[str] = None):
        self.name, self.task_id, self.docker_url = name, task_id, docker_url
        self.credential, self.ca_file = credential, ca_file

    def _api(self):
        import docker
        return docker.APIClient(base_url=self.docker_url, version="auto", timeout=30)

    def retire(self) -> list[str]:
        """Stop and remove this node's residents (they keep the rules for this task); their ids."""
        from .resident_container import retire_residents
        api = self._api()
        try:
            retired = retire_residents(api, self.name)
        finally:
            api.close()
        if retired:
            log.info("node active again: retired the resident agent (%s); taking over its rules",
                     ", ".join(cid[:12] for cid in retired))
        return retired

    def start(self) -> str:
        """Start the resident from this task's own container; its name."""
        from .resident_container import CA_PATH, TOKEN_PATH, own_container, start_resident
        files = {TOKEN_PATH: self.credential.encode() + b"\n"}
        if self.ca_file:
            with open(self.ca_file, "rb") as handle:
                files[CA_PATH] = handle.read()
        api = self._api()
        try:
            cid = start_resident(api, own_container(api, self.task_id), self.name, files)
        finally:
            api.close()
        log.info("started the resident agent %s (%s)", self.name, cid[:12])
        return self.name

    def leave(self, lease: NodeLease, client: ControllerClient, node_id: str, known: Optional[str]) -> Optional[str]:
        """The stop's outcome when the rules went to a resident (or were kept for one), else None:
        then the stop policy decides as usual."""
        if lease.newer_alive():
            return None  # a rolling update: the newer task takes them
        if not node_drained(client, node_id, known):
            return None
        return hand_to_resident(lease, self.start)
