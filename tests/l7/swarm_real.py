"""A swarm for the real-HAProxy tests: services by labels, tasks that are real servers on
127.0.0.N, and the plain-HTTP client helpers."""
from __future__ import annotations

import http.client
import json
from dataclasses import replace

from ingressmesh import snapshot
from ingressmesh.l7.applier import RouteApplier
from ingressmesh.l7.haproxy import HAProxy, HAProxyFiles, proc_state
from ingressmesh.l7.routes import plan_routes
from ingressmesh.plan import PlanOptions
from l7_backends import free_port, free_ports

NOW = 1000.0


class Swarm:
    """Services by labels; task i of the swarm answers on 127.0.0.(i+2) at its service's port."""

    def __init__(self, backends):
        self.backends, self.services, self.tasks, self.ports = backends, {}, [], {}
        self.started = 0  # tasks ever started: a new task never reuses a removed one's address

    def service(self, name: str, **labels) -> "Swarm":
        self.ports.setdefault(name, free_port())
        labels.setdefault("port", str(self.ports[name]))
        self.services[name] = {"id": name, "name": name,
                               "labels": {f"com.docker.lb.{k}": v for k, v in labels.items()
                                          if k != "proxy_protocol"}}
        if "proxy_protocol" in labels:  # ours, not Interlock's: io.ingressmesh.lb.proxy_protocol
            self.services[name]["labels"]["io.ingressmesh.lb.proxy_protocol"] = labels["proxy_protocol"]
        return self

    def task(self, task_id: str, service: str, tls=None, websocket: bool = False, proxy_v2: bool = False,
             **fields) -> str:
        """A task serving HTTP (over TLS with an ssl.SSLContext `tls`), a websocket echo, or an app
        that takes a PROXY v2 header first (proxy_v2.py)."""
        self.started += 1
        address = f"127.0.0.{self.started + 1}"
        self.tasks.append({"id": task_id, "service_id": service, "node_id": "n1", "since": NOW - 100,
                           "addresses": [{"network_id": "lo", "address": address}], **fields})
        if websocket:
            self.backends.start_websocket(task_id, address, self.ports[service])
        elif proxy_v2:
            self.backends.start_proxy_v2(task_id, address, self.ports[service])
        else:
            self.backends.start(task_id, address, self.ports[service], tls)
        return task_id

    def remove(self, task_id: str) -> None:
        """The task leaves the swarm (its server keeps running: nothing may reach it now)."""
        self.tasks = [t for t in self.tasks if t["id"] != task_id]

    def set(self, task_id: str, **fields) -> None:
        next(t for t in self.tasks if t["id"] == task_id).update(fields)

    def table(self):
        cluster = snapshot.from_dict({
            "nodes": [{"id": "n1", "hostname": "node1", "address": "10.9.0.1"}],
            "networks": [{"id": "lo", "name": "app", "subnet": "127.0.0.0/8"}],
            "services": list(self.services.values()), "tasks": self.tasks})
        return plan_routes(cluster, options=PlanOptions(now=NOW, drain_grace=10.0))


def get(applier, host: str, path: str = "/", headers=None, source: str = "127.0.0.1"):
    conn = http.client.HTTPConnection("127.0.0.1", applier.settings.http_port, timeout=5,
                                      source_address=(source, 0))
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def hits(applier, host: str, n: int = 12, path: str = "/") -> set:
    seen = set()
    for _ in range(n):
        status, _, body = get(applier, host, path)
        assert status == 200, (status, body)
        seen.add(json.loads(body)["backend"])
    return seen


def master(applier) -> tuple:
    reloads, failed, _ = proc_state(applier.haproxy.files.master_socket)
    return applier.haproxy.master_pid, reloads, failed


def second_replica(proxy, tmp_path, haproxy_binary: str) -> RouteApplier:
    """Another proxy replica beside `proxy`: same settings, its own work dir, ports and admin socket."""
    workdir = tmp_path / "other"
    workdir.mkdir()
    http_port, stats_port = free_ports(2)
    return RouteApplier(HAProxy(HAProxyFiles(str(workdir)), binary=haproxy_binary),
                        replace(proxy.settings, http_port=http_port, stats_port=stats_port,
                                admin_socket=str(workdir / "admin.sock")))
