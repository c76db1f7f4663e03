"""Record a swarm's raw API answers for the rootless provider tests (tests/unit/data/swarm_api.json).

Usage: python tests/lab/record_swarm_api.py unix:///path/manager.sock unix:///path/worker.sock OUT.json
Run it against a lab swarm (`ingressmesh lab up`) with a few services; the manager socket gives
nodes, networks, services and tasks, the worker socket that node's containers and networks.
"""
import json
import sys

import docker


def main(manager_url: str, node_url: str, out: str) -> None:
    manager = docker.APIClient(base_url=manager_url, version="auto")
    node = docker.APIClient(base_url=node_url, version="auto")
    containers = node.containers(filters={"label": "com.docker.swarm.task.id"})
    data = {
        "nodes": manager.nodes(), "networks": manager.networks(), "services": manager.services(),
        "tasks": manager.tasks(),
        "node_containers": containers,
        "node_inspect": {c["Id"]: node.inspect_container(c["Id"]) for c in containers},
        "node_networks": [node.inspect_network(n["Id"]) for n in node.networks(filters={"driver": "overlay"})],
        "node_info": {"NodeID": node.info()["Swarm"]["NodeID"]},
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
