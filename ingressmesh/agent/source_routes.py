"""Reply routes in this node's tasks of source-keeping services (issue 21), on the fast-path thread.

The main loop stops SNATing a labelled service's published ports in the ingress namespace; its
tasks on this node must then route their replies back to whichever node's ingress namespace
sent each connection (dataplane/reply_routes.py).  This keeps that programmed: which local
container runs which task is only known here (the container's `com.docker.swarm.task.id`
label), so it runs beside the fast path, which already follows the local containers.  A task
is (re)programmed when first seen or when its routes change (a node joins or leaves); its
routes are never taken away while it runs: connections it accepted keep their replies' way, and
for a SNATed connection the route back is the same node anyway.  Failures are retried at the
next sync and shown in /healthz.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from ..dataplane.reply_routes import ReplyRoutesError, apply_reply_routes
from ..model import Cluster
from ..netns import Netns
from ..plan_source_ip import SNAT, TaskReplyRoutes, plan_reply_routes

log = logging.getLogger(__name__)


class SourceRoutes:
    def __init__(self, default: str = SNAT, apply: Callable = apply_reply_routes):
        self.default, self._apply = default, apply
        self.programmed: dict[str, TaskReplyRoutes] = {}  # container id -> what its namespace holds
        self.errors: dict[str, str] = {}

    def sync(self, cluster: Optional[Cluster], node_id: str, facts, netns_dir: str) -> None:
        """Program every local task that needs it; `facts` are LocalContainers' ContainerFacts."""
        alive = {f.id: f for f in facts}
        self.programmed = {cid: r for cid, r in self.programmed.items() if cid in alive}
        if cluster is None:
            return
        by_task = {f.task_id: f.id for f in facts if f.task_id}
        errors = {}
        for routes in plan_reply_routes(cluster, node_id, by_task, self.default):
            if self.programmed.get(routes.container_id) == routes:
                continue
            path = f"{netns_dir}/{alive[routes.container_id].sandbox}"
            try:
                iface = self._apply(Netns(path), routes)
            except ReplyRoutesError as err:
                errors[f"src:{routes.container_id}"] = str(err)
                continue
            self.programmed[routes.container_id] = routes
            log.info("source addresses kept: task %s (%s) routes replies back through %d ingress namespaces on %s",
                     routes.task_id, routes.service, len(routes.peers), iface)
        for key, message in sorted(set(errors.items()) - set(self.errors.items())):
            log.warning("%s: %s (new connections to it get no reply until this works)", key, message)
        self.errors = errors

    def status(self) -> dict:
        return {"tasks": len(self.programmed), "errors": dict(self.errors)}
