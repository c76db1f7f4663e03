"""The live view: a snapshot from a running controller, and kernel rows annotated with tasks.

`ingressmesh show` reads what the kernel holds (the truth); the snapshot only names what it
finds there: which task an address is, on which node, with what health.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .. import model, snapshot
from ..plan import ACTIVE, PlanOptions, serving_states, tasks_by_service
from ..dataplane.view import Row


@dataclass(frozen=True)
class TaskInfo:
    name: str
    node: str
    health: str
    desired: str
    panic: bool = False  # its service has no healthy task: it serves in panic mode (plan.serving_states)


def fetch_snapshot(url: str, token_file: str) -> tuple[int, model.Cluster, list[str]]:
    """(version, cluster, refused) from the controller at `url`; raises ValueError on failure."""
    from ..agent.controller_client import ControllerClient, ControllerError
    from ..daemon.token import TokenError, load_token
    try:
        client = ControllerClient([url], load_token(token_file))
    except (TokenError, ValueError) as err:
        raise ValueError(str(err)) from None
    try:
        got = client.follow(0, 0)
    except ControllerError as err:
        raise ValueError(f"controller {url}: {err}") from None
    finally:
        client.close()
    if got is None:
        raise ValueError(f"controller {url} has no snapshot yet")
    version, data = got
    try:
        return version, snapshot.from_dict(data), list(data.get("refused") or ())
    except snapshot.SnapshotError as err:
        raise ValueError(f"controller {url} sent a bad snapshot: {err}") from None


def task_index(cluster: model.Cluster) -> dict[str, TaskInfo]:
    """address -> the task holding it (addresses are unique across a swarm's overlay subnets)."""
    services = {s.id: s.name for s in cluster.services}
    nodes = {n.id: n.hostname for n in cluster.nodes}
    node_states = {n.id: n.state for n in cluster.nodes}
    panicked = set()
    for tasks in tasks_by_service(cluster).values():
        states, panic = serving_states(tasks, node_states, PlanOptions())
        panicked |= {t.id for t in tasks if panic and states[t.id] == ACTIVE}
    index = {}
    for task in cluster.tasks:
        service = services.get(task.service_id, task.service_id)
        node = nodes.get(task.node_id, task.node_id)
        name = f"{service}.{task.slot}" if task.slot else f"{service}.{node}"
        for address in task.addresses:
            index[address.address] = TaskInfo(name, node, task.health, task.desired_state, task.id in panicked)
    return index


def as_json(rows: list[Row], index: dict[str, TaskInfo]) -> list[dict]:
    """`show --json`: one object per front-end; backends carry task, node and health when known."""
    result = []
    for row in rows:
        backends = []
        for address, state in row.backends:
            info: Optional[TaskInfo] = index.get(address.split(":", 1)[0])
            entry = {"address": address, "state": state}
            if info:
                entry.update(task=info.name, node=info.node, health=info.health, panic=info.panic)
            backends.append(entry)
        result.append({"service": row.service, "frontend": row.frontend, "note": row.note, "backends": backends})
    return result


def annotated(rows: list[Row], index: dict[str, TaskInfo]) -> list[dict]:
    """One line per (front-end, backend) with the task's name, node, health and state."""
    lines = []
    for row in rows:
        if not row.backends:
            lines.append({"service": row.service, "frontend": row.frontend, "task": "-", "node": "-",
                          "address": "-", "health": "-", "state": row.note or "-"})
        for address, state in row.backends:
            info: Optional[TaskInfo] = index.get(address.split(":", 1)[0])
            if info and info.panic and state == ACTIVE:
                state = f"{ACTIVE} (panic: no healthy task)"
            lines.append({"service": row.service, "frontend": row.frontend, "address": address, "state": state,
                          "task": info.name if info else "?", "node": info.node if info else "?",
                          "health": info.health if info else "?"})
    return lines


def container_namespaces(netns_dir: str, docker_url: str) -> dict[str, str]:
    """The VIP fast path's container namespaces in `netns_dir` (every other namespace file that
    holds an ingressmesh table) -> the container's name, asked from dockerd ("?" when it cannot
    be asked: the table is shown all the same)."""
    from ..nft.kernel import KernelNft
    from ..netns import Netns
    if not os.path.isdir(netns_dir):
        return {}
    paths = [os.path.join(netns_dir, name) for name in sorted(os.listdir(netns_dir))
             if name != "ingress_sbox" and not name.startswith("lb_")]
    paths = [p for p in paths if KernelNft(Netns(p)).has_table()]
    names = {}
    if paths:
        try:
            import docker
            api = docker.APIClient(base_url=docker_url, version="auto", timeout=10)
            for summary in api.containers():
                key = ((api.inspect_container(summary["Id"]).get("NetworkSettings") or {}).get("SandboxKey") or "")
                names[os.path.basename(key)] = (summary.get("Names") or ["?"])[0].lstrip("/")
        except Exception:  # noqa: BLE001 - the names are a convenience; the tables are the facts
            pass
    return {p: names.get(os.path.basename(p), "?") for p in paths}


def docker_namespaces(netns_dir: str) -> list[str]:
    """Docker's routing-mesh namespaces in `netns_dir`: ingress_sbox and every lb_<network>."""
    if not os.path.isdir(netns_dir):
        return []
    return [os.path.join(netns_dir, name) for name in sorted(os.listdir(netns_dir))
            if name == "ingress_sbox" or name.startswith("lb_")]
