"""A synthetic swarm for the benchmarks: N VIP services x E tasks on one overlay network.

Why synthetic: the numbers to beat (DESIGN §9) are quoted for "N services x E endpoints", so the
cluster must have exactly that shape and nothing else, be reproducible, and need no Docker.
Addresses come from one large overlay subnet so every VIP and task address is distinct.
"""
from __future__ import annotations

import dataclasses
import ipaddress

from ingressmesh import model

NETWORK_ID = "benchnet0000"
SUBNET = "10.0.0.0/8"
NODE_IDS = ("node-0", "node-1", "node-2")
LOCAL_NODE = NODE_IDS[0]
_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
_VIP_OFFSET = 1 << 16  # VIPs from 10.1.0.0
_TASK_OFFSET = 1 << 20  # tasks from 10.16.0.0
_SPARE_OFFSET = 1 << 23  # extra tasks added by the churn benchmark, from 10.128.0.0


def _ip(offset: int) -> str:
    return str(ipaddress.IPv4Address(_BASE + offset))


def service_id(index: int) -> str:
    return f"svc{index:06d}"


def node_ids(count: int = len(NODE_IDS)) -> tuple[str, ...]:
    """`count` node ids; the first three are NODE_IDS."""
    return tuple(f"node-{i}" for i in range(count))


def build_cluster(services: int, endpoints: int, nodes: int = len(NODE_IDS)) -> model.Cluster:
    """`services` VIP services, each with `endpoints` running tasks spread over `nodes` nodes."""
    ids = node_ids(nodes)
    node_objs = tuple(model.Node(node_id, f"host-{i}", f"192.168.{50 + i // 250}.{i % 250 + 1}", role="manager" if i == 0 else "worker")
                      for i, node_id in enumerate(ids))
    lb_addresses = tuple(model.NodeAddress(node_id, _ip(2 + i)) for i, node_id in enumerate(ids))
    network = model.Network(NETWORK_ID, "benchnet", SUBNET, lb_addresses=lb_addresses)
    svcs = tuple(model.Service(service_id(s), f"web{s}", vips=(model.VirtualIP(NETWORK_ID, _ip(_VIP_OFFSET + s)),))
                 for s in range(services))
    tasks = tuple(_task(s, e, _ip(_TASK_OFFSET + s * endpoints + e), ids)
                  for s in range(services) for e in range(endpoints))
    return model.Cluster(nodes=node_objs, networks=(network,), services=svcs, tasks=tasks)


def _task(service: int, slot: int, address: str, ids: tuple = NODE_IDS) -> model.Task:
    return model.Task(id=f"task-{service:06d}-{slot:03d}", service_id=service_id(service),
                      node_id=ids[(service + slot) % len(ids)], slot=slot + 1,
                      addresses=(model.NetworkAddress(NETWORK_ID, address),))


def spare_task(service: int, number: int) -> model.Task:
    """An extra running task for `service` (the churn benchmark's "one endpoint added")."""
    return _task(service, 900 + number, _ip(_SPARE_OFFSET + number))


def with_task(cluster: model.Cluster, task: model.Task) -> model.Cluster:
    return dataclasses.replace(cluster, tasks=cluster.tasks + (task,))


def without_task(cluster: model.Cluster, task_id: str) -> model.Cluster:
    return dataclasses.replace(cluster, tasks=tuple(t for t in cluster.tasks if t.id != task_id))
