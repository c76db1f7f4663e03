"""The L7 proxy services on the swarm lab: deploy them, find every replica, ask each one
directly (from its node, through its docker_gwbridge address) what it serves."""
from __future__ import annotations

import json
import socket
import time
import urllib.request

from ingressmesh.lab import BUSYBOX_IMAGE
from ingressmesh.netns import Netns
from ingressmesh.testbed import l7_lab
from ingressmesh.testbed.l7_probe import http_request
from swarm_helpers import NETWORK, create_service, remove_service, wait_for

HTTP_PORT, BLUE_PORT, HTTPS_PORT = 8080, 8090, 8443
DEFAULT_PROXY, BLUE_PROXY = "ingressmesh-proxy", "ingressmesh-proxy-blue"
LB = "com.docker.lb."


def deploy(mesh) -> str:
    """Both proxy services: `default` (ingress, 2 replicas) and `blue` (host mode, 1 replica), with
    the shared overlay as their RoutingNetwork.  Without it every test rolled the proxies twice
    (attach the overlay for its first labelled service, detach it when the last one left):
    ~24 s of each test's setup.  Attaching and detaching networks keep their own tests (test_7
    here, test_l7_proxy_service_lab)."""
    url = mesh.controller_url
    return l7_lab.deploy(mesh, l7_lab.extension("default", url, HTTP_PORT, ssl_port=HTTPS_PORT, routing_network=NETWORK)
                         + "\n" + l7_lab.extension("blue", url, BLUE_PORT, replicas=1, mode="host", cluster="blue",
                                                   routing_network=NETWORK))


def proxies_deployed(mesh, config: str = "", proxies=((DEFAULT_PROXY, 2), (BLUE_PROXY, 1))):
    """Module fixture body: the proxy services (both of deploy(), or those of `config` named with
    their replica counts in `proxies`) up and healthy; removed afterwards."""
    if config:
        l7_lab.deploy(mesh, config)
    else:
        deploy(mesh)
    for service, count in proxies:
        healthy_replicas(mesh.lab, service, count)
        reached_through_every_node(mesh.lab, service)
    yield mesh
    mesh.stop("l7")
    for service, _ in proxies:
        remove_service(mesh.lab, service)


def labelled(lab, name: str, *options: str, image: str = BUSYBOX_IMAGE, **labels) -> None:
    """A service on the shared overlay with com.docker.lb.<key>=<value> for each keyword."""
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{LB}{key}={value}")]
    create_service(lab, name, "--network", NETWORK, *flags, *options, image=image)


def every_node(lab, host: str, path: str = "/", port: int = HTTP_PORT):
    """One request for `host` from the client namespace to each node's published port."""
    return [http_request(lab.client_netns(), lab.node_address(n), port, host, path) for n in lab.config.node_numbers]


def replicas(lab, service: str) -> list[tuple[int, str, str]]:
    """(node, container id, docker_gwbridge address) of every running task of a proxy service.
    Matched by service ID, not name: a module's proxies are redeployed under the names the last
    module removed, whose containers still answer during their stop grace period (CI took those
    for the new replicas, then found no service by that name)."""
    import docker.errors
    client = lab.docker_client(1)  # an SDK call, not the CLI: ~0.1 s under emulation, not 1.5 s
    try:
        service_id = client.api.inspect_service(service)["ID"]
    except docker.errors.APIError:
        return []  # `l7 deploy --watch` has not created it yet (or the manager is busy): asked again
    finally:
        client.close()
    found = []
    for n in lab.config.node_numbers:
        ids = lab.docker(n, "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.swarm.service.id={service_id}",
                         "--filter", "status=running").stdout.split()
        if not ids:
            continue
        bridge = json.loads(lab.docker(n, "network", "inspect", "docker_gwbridge").stdout)[0]["Containers"]
        for cid in ids:
            if cid in bridge:  # a task on an overlay network reaches its node through docker_gwbridge
                found.append((n, cid, bridge[cid]["IPv4Address"].split("/")[0]))
                continue
            # A task on no overlay (host-mode ports only) sits on the default bridge instead.
            networks = json.loads(lab.docker(n, "inspect", cid).stdout)[0]["NetworkSettings"]["Networks"]
            address = (networks.get("bridge") or {}).get("IPAddress")
            if address:
                found.append((n, cid, address))
    return found


def _in_node(lab, n: int, call):
    with Netns.from_ref(lab.node_netns(n)).entered():
        return call()


def _token(lab) -> str:
    """What a proxy replica's /v1/ API takes: the read-only credential `l7 deploy` gave the proxies
    (made from the cluster secret, like `ingressmesh token reader`)."""
    from ingressmesh.daemon.credentials import reader_credential
    from ingressmesh.testbed.swarm_mesh import SwarmMesh
    with open(SwarmMesh(lab).token_file, encoding="utf-8") as handle:
        return reader_credential(handle.read().strip())


def replica_json(lab, n: int, address: str, path: str, timeout: float = 2.0) -> tuple[int, dict]:
    """A JSON endpoint of one proxy replica (paths under /v1/ with the proxies' credential)."""
    request = urllib.request.Request(f"http://{address}:9403{path}")
    if path.startswith("/v1/"):
        request.add_header("Authorization", f"Bearer {_token(lab)}")

    def call():
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")
    return _in_node(lab, n, call)


def replica_get(lab, n: int, address: str, host: str, path: str = "/", port: int = 80):
    """One request straight to one proxy replica (no L4 mesh in between)."""
    return http_request(lab.node_netns(n), address, port, host, path)


def healthy_replicas(lab, service: str, count: int, timeout: float = 120.0) -> list[tuple[int, str, str]]:
    def ready():
        found = replicas(lab, service)
        if len(found) != count:
            return None
        return found if all(replica_json(lab, n, ip, "/healthz")[0] == 200 for n, _, ip in found) else None
    return wait_for(f"{count} healthy replicas of {service}", ready, timeout=timeout, interval=0.5)


def reached_through_every_node(lab, service: str, timeout: float = 60.0) -> None:
    """Every ingress-published TCP port of `service` accepts a connection on every node.  A
    healthy replica (as asked directly) gets its first connections through the routing mesh only
    once its node has reported it healthy and the agents have programmed it; a load started in
    between met "connection refused" on every node (mass churn, 1.7 s of it)."""
    spec = json.loads(lab.docker(1, "service", "inspect", service).stdout)[0]["Endpoint"].get("Ports") or []
    ports = [p["PublishedPort"] for p in spec if p.get("PublishMode", "ingress") == "ingress" and p["Protocol"] == "tcp"]
    client = Netns.from_ref(lab.client_netns())

    def accepts(address: str, port: int) -> bool:
        try:
            with client.entered():
                connection = socket.create_connection((address, port), timeout=2)
            connection.close()
            return True
        except OSError:
            return False
    for port in ports:
        wait_for(f"{service}'s published port {port} through every node", timeout=timeout, interval=0.2,
                 check=lambda: all(accepts(lab.node_address(n), port) for n in lab.config.node_numbers))


def settled_replicas(lab, service: str, count: int, quiet: float = 2.0,
                     timeout: float = 120.0) -> list[tuple[int, str, str]]:
    """The replicas once the service is done rolling: `l7 deploy --watch` attaches and detaches
    networks and secrets with start-first updates, so after a test removes a service the proxy
    may be replaced for a while. Settled = no update in progress, `count` healthy replicas, and
    the same spec version and tasks for `quiet` seconds."""
    seen = {"key": None, "since": 0.0}

    def ready():
        spec = json.loads(lab.docker(1, "service", "inspect", service).stdout)[0]
        state = (spec.get("UpdateStatus") or {}).get("State", "completed")
        found = replicas(lab, service)
        if state not in ("completed", "rollback_completed") or len(found) != count \
                or not all(replica_json(lab, n, ip, "/healthz")[0] == 200 for n, _, ip in found):
            seen["key"] = None
            return None
        key = (spec["Version"]["Index"], tuple(sorted(cid for _, cid, _ in found)))
        if key != seen["key"]:
            seen.update(key=key, since=time.monotonic())
            return None
        return found if time.monotonic() - seen["since"] >= quiet else None
    return wait_for(f"{service} settled with {count} healthy replicas", ready, timeout=timeout, interval=0.5)


def served_by_every_replica(lab, service: str, host: str, status: int = 200, path: str = "/", found=None) -> bool:
    """Every replica (`found`, or looked up now) answers `status` for host + path."""
    found = replicas(lab, service) if found is None else found
    return bool(found) and all(replica_get(lab, n, ip, host, path).status == status for n, _, ip in found)


def reload_counts(lab, service: str) -> dict[str, tuple]:
    """Per replica: (HAProxy master pid, reloads, config generation)."""
    counts = {}
    for n, cid, ip in replicas(lab, service):
        _, state = replica_json(lab, n, ip, "/v1/l7/state")
        counts[cid] = (state["master_pid"], state["reloads"], state["config_generation"])
    return counts


def wait_routed(lab, host: str, services=(DEFAULT_PROXY,), timeout: float = 60.0) -> None:
    for service in services:
        wait_for(f"{host} served by every replica of {service}",
                 lambda: served_by_every_replica(lab, service, host), timeout=timeout, interval=0.2)


def time_until(check, timeout: float = 10.0, interval: float = 0.01) -> float:
    """Seconds until check() is true (bounded)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout:g} s")


class Browser:
    """Sends the session cookie back as a browser would (the last Set-Cookie wins), each request
    through the next node in turn: the L4 mesh spreads them over every proxy replica."""

    def __init__(self, lab, host: str, path: str = "/session"):
        self.lab, self.host, self.path, self.cookie, self.sent = lab, host, path, "", 0

    def request(self):
        node = self.lab.config.node_numbers[self.sent % len(self.lab.config.node_numbers)]
        self.sent += 1
        headers = {"Cookie": self.cookie} if self.cookie else None
        answer = http_request(self.lab.client_netns(), self.lab.node_address(node), HTTP_PORT, self.host,
                              self.path, headers=headers)
        assert answer.status == 200, answer
        if answer.headers.get("set-cookie"):
            self.cookie = answer.headers["set-cookie"].split(";")[0]
        return answer

    def get(self) -> str:
        return self.request().hostname
