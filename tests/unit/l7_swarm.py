"""Clusters for the L7 planner tests: one overlay `app` (plus `other`), services by labels."""
from __future__ import annotations

from ingressmesh import snapshot

NOW = 1000.0
NETWORKS = [
    {"id": "ingressnet", "name": "ingress", "subnet": "10.255.0.0/16", "ingress": True},
    {"id": "appnet", "name": "app", "subnet": "10.0.1.0/24"},
    {"id": "othernet", "name": "other", "subnet": "10.0.2.0/24"},
]
NODES = [{"id": "n1", "hostname": "node1", "address": "10.9.0.1"},
         {"id": "n2", "hostname": "node2", "address": "10.9.0.2"}]


def service(name: str, labels: dict, vip: str = "",  # vip: the host part, e.g. "100"
            networks=("appnet",)) -> dict:
    subnets = {"appnet": "10.0.1", "othernet": "10.0.2"}
    vips = [{"network_id": net, "address": subnets[net] + "." + vip} for net in networks if vip]
    return {"id": name, "name": name, "labels": {f"com.docker.lb.{k}": v for k, v in labels.items()}, "vips": vips}


def task(task_id: str, svc: str, host: int, node: str = "n1", network: str = "appnet", **fields) -> dict:
    subnet = {"appnet": "10.0.1", "othernet": "10.0.2"}[network]
    return {"id": task_id, "service_id": svc, "node_id": node, "since": NOW - 100,
            "addresses": [{"network_id": network, "address": f"{subnet}.{host}"}], **fields}


def cluster(services: list, tasks: list):
    return snapshot.from_dict({"nodes": NODES, "networks": NETWORKS, "services": services, "tasks": tasks})
