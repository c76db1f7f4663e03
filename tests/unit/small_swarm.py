"""A small swarm for rule tests: two overlay networks, three services, tasks chosen per test.

Node n1 is "this node".  Its ingress namespace is 10.255.0.2 on the ingress network and
172.18.0.2 on docker_gwbridge; its load balancer on `app` is 10.0.1.2.
"""
from __future__ import annotations

from ingressmesh import snapshot
from ingressmesh.plan import NamespacePlan, PlanOptions, plan_node

NOW = 1000.0
WEB_VIP, API_VIP = "10.0.1.10", "10.0.1.11"
LB_ADDRESS, INGRESS_ADDRESS, GATEWAY = "10.0.1.2", "10.255.0.2", "172.18.0.2"
NODE_ADDRESS = "10.9.0.1"

_BASE = {
    "nodes": [{"id": "n1", "hostname": "node1", "address": NODE_ADDRESS},
              {"id": "n2", "hostname": "node2", "address": "10.9.0.2"}],
    "networks": [
        {"id": "ingressnet", "name": "ingress", "subnet": "10.255.0.0/16", "ingress": True,
         "lb_addresses": [{"node_id": "n1", "address": INGRESS_ADDRESS},
                          {"node_id": "n2", "address": "10.255.0.3"}]},
        {"id": "appnet", "name": "app", "subnet": "10.0.1.0/24",
         "lb_addresses": [{"node_id": "n1", "address": LB_ADDRESS}, {"node_id": "n2", "address": "10.0.1.3"}]},
    ],
    "services": [
        {"id": "web", "name": "web",
         "vips": [{"network_id": "appnet", "address": WEB_VIP}, {"network_id": "ingressnet", "address": "10.255.0.10"}],
         "ports": [{"protocol": "tcp", "published_port": 8080, "target_port": 80},
                   {"protocol": "udp", "published_port": 5353, "target_port": 53}]},
        {"id": "api", "name": "api",
         "vips": [{"network_id": "appnet", "address": API_VIP}],
         "ports": [{"protocol": "tcp", "published_port": 9090, "target_port": 90},
                   {"protocol": "udp", "published_port": 9053, "target_port": 53},
                   {"protocol": "tcp", "published_port": 7000, "target_port": 70, "publish_mode": "host"}]},
    ],
}


class Swarm:
    """Builds node n1's plans from a list of tasks; addresses are the constants above."""
    now = NOW
    web_vip, api_vip = WEB_VIP, API_VIP
    lb_address, ingress_address, gateway, node_address = LB_ADDRESS, INGRESS_ADDRESS, GATEWAY, NODE_ADDRESS

    @staticmethod
    def task(task_id: str, service: str, node: str, host: int, **fields) -> dict:
        """A task of `service` on `node` with address .<host> on both networks."""
        return {"id": task_id, "service_id": service, "node_id": node,
                "addresses": [{"network_id": "appnet", "address": f"10.0.1.{host}"},
                              {"network_id": "ingressnet", "address": f"10.255.0.{host}"}], **fields}

    def draining(self, task_id: str, service: str, node: str, host: int, now: float = NOW) -> dict:
        """A task told to stop a second before `now`: still inside its drain grace then."""
        return self.task(task_id, service, node, host, desired_state="shutdown", since=now - 1)

    @staticmethod
    def plan(tasks: list, key: str, now: float = NOW) -> NamespacePlan:
        """Node n1's plan for one namespace: "host", "ingress" or "lb:appnet"."""
        cluster = snapshot.from_dict({**_BASE, "tasks": tasks})
        found = plan_node(cluster, "n1", PlanOptions(now=now)).namespace(key)
        assert found is not None, key
        return found
