"""`ingressmesh show --l7`: what every proxy task on this node serves, read from its running
HAProxy (through `ingressmesh l7 state` inside the container, so no port or token is needed)."""
from __future__ import annotations

import json

from .. import model
from . import labels
from .grammar import LabelError
from .proxy_service import ROLE_LABEL
from .routes import ProxyScope, plan_routes


class ShowError(RuntimeError):
    pass


def proxy_states(api) -> dict[str, dict]:
    """{container name: state document} for every running proxy container of this dockerd."""
    found = {}
    for container in api.containers(filters={"label": ROLE_LABEL, "status": "running"}):
        name = (container.get("Names") or [container["Id"][:12]])[0].lstrip("/")
        exec_id = api.exec_create(container["Id"], ["ingressmesh", "l7", "state", "--json"], stdout=True, stderr=True)
        output = api.exec_start(exec_id).decode(errors="replace")
        code = api.exec_inspect(exec_id).get("ExitCode")
        if code != 0:
            found[name] = {"error": output.strip()[-500:] or f"exit status {code}"}
            continue
        try:
            found[name] = json.loads(output)
        except ValueError:
            found[name] = {"error": f"unreadable state: {output[:200]!r}"}
    return found


def rows(document: dict) -> list[dict]:
    """One row per route and server: host + path → service → task, node, address, health, state."""
    lines = []
    for route in document.get("routes", ()):
        backend = document["backends"].get(route["backend"], {})
        host = route["host"] or "(default)"
        slots = backend.get("slots") or [None]
        for slot in slots:
            if slot is None:
                lines.append({"route": f"{host}{route['path']}", "service": ",".join(backend.get("services", ())),
                              "task": "-", "node": "-", "address": "-", "health": "-", "state": "no server"})
                continue
            lines.append({"route": f"{host}{route['path']}", "service": slot["service"],
                          "task": slot["task_id"][:12], "node": slot["node"] or "-",
                          "address": f"{slot['address']}:{slot['port']}", "health": slot["health"],
                          "state": slot.get("serving", slot["state"])})
    return lines


def label_refusals(cluster: model.Cluster) -> list[str]:
    """What the proxies of every service cluster refuse in `cluster` (`show --controller`), one
    line each: the route planner once per service cluster the labels name."""
    clusters = {""}
    for service in cluster.services:
        try:
            clusters.add(labels.parse(service.labels).service_cluster)
        except LabelError:
            continue  # refused by every scope below
    found: dict[str, None] = {}
    for name in sorted(clusters):
        for refusal in plan_routes(cluster, ProxyScope(service_cluster=name)).refused:
            found[f"service {refusal.service}: {refusal.reason}"] = None
    return list(found)
