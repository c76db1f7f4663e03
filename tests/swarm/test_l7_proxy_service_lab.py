"""How `l7 deploy` keeps the proxy services on the real swarm lab (issue 20, points 2, 1, 8, 10):
a service whose port is host mode with no published number keeps its VIP and its L7 route;
host-published proxies pinned one per node get a new network (stop-first) instead of waiting for
ever, and a start-first update that cannot be scheduled is named by `l7 status`, l7 deploy's
/healthz and its log; a labelled stack on the RoutingNetwork is removed by `docker stack rm` the
first time and never rolls the proxies, and one on its own network is named (not joined) and
removed the first time too; a new network does roll them, and what that cuts (upgraded
connections) is measured."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

import pytest

from ingressmesh.lab import BUSYBOX_IMAGE, PYTHON_IMAGE
from ingressmesh.testbed import l7_lab
from ingressmesh.testbed.websocket import echo
from l7_tls_helpers import open_websocket
from l7_helpers import (DEFAULT_PROXY, HTTP_PORT, every_node, healthy_replicas, labelled, replicas, settled_replicas,
                        wait_routed)
from swarm_helpers import NETWORK, remove_service, wait_for, wait_running

PINNED, PINNED_PORT = "ingressmesh-proxy-pinned", 8070
ROUTING = "ingressmesh-routing"


@pytest.fixture(scope="module")
def l7(mesh):
    """The default proxies (ingress, 2 replicas) and Interlock's service-cluster layout: host-mode
    proxies on every node (3 replicas, 3 nodes: their tasks cannot be doubled)."""
    url = mesh.controller_url
    mesh.lab.docker(1, "network", "create", "--driver", "overlay", "--attachable", ROUTING)
    config = l7_lab.deploy(mesh, l7_lab.extension("default", url, HTTP_PORT, routing_network=ROUTING) + "\n"
                           + l7_lab.extension("pinned", url, PINNED_PORT, replicas=3, mode="host", cluster="pinned"))
    healthy_replicas(mesh.lab, DEFAULT_PROXY, 2)
    healthy_replicas(mesh.lab, PINNED, 3)
    leftovers = {"services": [], "networks": [ROUTING]}  # removed once the proxies are: no roll to detach them
    yield mesh, config, leftovers
    mesh.stop("l7")
    for service in leftovers["services"] + [DEFAULT_PROXY, PINNED]:
        remove_service(mesh.lab, service)
    for network in leftovers["networks"]:
        wait_for(f"{network} removed", lambda: mesh.lab.docker(1, "network", "rm", network, check=False).returncode == 0,
                 timeout=60, interval=1)


def status(lab, config: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "ingressmesh", "l7", "status", "--config", config, "--docker",
                           f"unix://{lab.config.docker_sock(1)}", "--json"], capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout)


def through_vip(lab, service: str, count: int) -> list[str]:
    """`count` answers through the service's VIP (by name, Docker's DNS) from a container on node1."""
    client = ("import socket, sys, time\n"
              "for _ in range(int(sys.argv[2])):\n"
              "    for attempt in range(40):\n"
              "        try:\n"
              "            s = socket.create_connection((sys.argv[1], 80), timeout=2); break\n"
              "        except OSError:\n"
              "            time.sleep(0.25)\n"
              "    s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); data = b''\n"
              "    while chunk := s.recv(4096): data += chunk\n"
              "    print(data.split(b'\\r\\n\\r\\n')[-1].decode().strip())\n")
    return lab.docker(1, "run", "--rm", "--network", NETWORK, PYTHON_IMAGE, "python3", "-c", client, service,
                      str(count), timeout=120).stdout.split()


def test_a_host_mode_port_without_a_published_number_keeps_the_vip_and_the_route(l7):
    mesh = l7[0]
    lab = mesh.lab
    labelled(lab, "hostport", "--replicas", "2", "--publish", "mode=host,target=8080", hosts="hp.l7", port="80")
    try:
        tasks = {t["container"] for t in wait_running(lab, "hostport", 2)}
        ports = json.loads(lab.docker(1, "service", "inspect", "hostport").stdout)[0]["Endpoint"].get("Ports")
        print(f"Endpoint.Ports of a host-mode port with no published number: {ports}")
        wait_routed(lab, "hp.l7")
        answers = [a for _ in range(4) for a in every_node(lab, "hp.l7")]
        assert {a.status for a in answers} == {200} and {a.hostname for a in answers} <= tasks
        seen = through_vip(lab, "hostport", 20)
        assert len(seen) == 20 and set(seen) == tasks
    finally:
        remove_service(lab, "hostport")


def _stuck_health(mesh):
    """l7 deploy's /healthz (status, body) once it names a stuck update, else None."""
    code, body = l7_lab.deploy_health(mesh)
    return (code, body) if body.get("stuck") else None


def test_pinned_host_mode_proxies_get_a_new_network_and_a_stuck_update_is_named(l7):
    mesh, config, leftovers = l7
    lab = mesh.lab
    assert status(lab, config)[PINNED]["update_order"] == "stop-first"
    lab.docker(1, "network", "create", "--driver", "overlay", "late")
    leftovers["networks"].append("late")
    leftovers["services"].append("late-app")
    labelled(lab, "late-app", "--network", "late", hosts="late.l7", port="80", service_cluster="pinned",
             network="late")
    (task,) = wait_running(lab, "late-app", 1)
    settled_replicas(lab, PINNED, 3, timeout=180)  # the stop-first roll that attaches `late` ends
    spec = json.loads(lab.docker(1, "service", "inspect", PINNED).stdout)[0]
    late = json.loads(lab.docker(1, "network", "inspect", "late").stdout)[0]["Id"]
    assert late in [n["Target"] for n in spec["Spec"]["TaskTemplate"]["Networks"]]
    wait_routed(lab, "late.l7", services=(PINNED,), timeout=60)
    answers = every_node(lab, "late.l7", port=PINNED_PORT)
    assert [(a.status, a.hostname) for a in answers] == [(200, task["container"])] * 3
    assert status(lab, config)[PINNED]["stuck"] is None
    # What l7 deploy no longer does: start-first with every node's host port taken never ends.
    lab.docker(1, "service", "update", "--detach", "--update-order", "start-first", "--env-add", "FORCE=1", PINNED)
    stuck = wait_for("the stuck update named by l7 status",
                     lambda: status(lab, config)[PINNED]["stuck"], timeout=60, interval=2)
    print(f"l7 status names it: {stuck}")
    assert "cannot be scheduled" in stuck and "host-mode port" in stuck
    # ... and by l7 deploy's /healthz (503) and its log, within its 10 s check.
    code, health = wait_for("the stuck update on l7 deploy's /healthz", lambda: _stuck_health(mesh), timeout=30,
                            interval=1)
    print(f"l7 deploy /healthz: {code} {health['stuck']}")
    assert code == 503 and health["proxy_services"][PINNED]["stuck"].startswith(f"proxy service {PINNED}: update stuck")
    assert "host-mode port" in health["proxy_services"][PINNED]["stuck"]
    with open(mesh.log_path("l7"), encoding="utf-8") as log:
        assert any(line.startswith(f"l7 deploy: proxy service {PINNED}: update stuck") for line in log)
    # The old tasks never stopped: the host still answers on every node while the update is stuck.
    assert [(a.status, a.hostname) for a in every_node(lab, "late.l7", port=PINNED_PORT)] == \
        [(200, task["container"])] * 3
    lab.docker(1, "service", "rollback", "--detach", PINNED)  # the old tasks never stopped: quick
    settled_replicas(lab, PINNED, 3, timeout=120)
    assert status(lab, config)[PINNED]["stuck"] is None
    wait_for("l7 deploy's /healthz clear again", lambda: l7_lab.deploy_health(mesh)[0] == 200, timeout=30, interval=1)


STACK = f"""version: "3.8"
services:
  web:
    image: {BUSYBOX_IMAGE}
    networks: [app, routing]
    deploy:
      replicas: 2
      labels:
        com.docker.lb.hosts: stack.l7
        com.docker.lb.port: "80"
        com.docker.lb.network: {ROUTING}
networks:
  app: {{}}
  routing:
    external: true
    name: {ROUTING}
"""


def proxy_version(lab) -> int:
    return json.loads(lab.docker(1, "service", "inspect", DEFAULT_PROXY).stdout)[0]["Version"]["Index"]


def test_a_labelled_stack_on_the_routing_network_is_removed_the_first_time_without_rolling_the_proxies(l7):
    mesh = l7[0]
    lab = mesh.lab
    settled_replicas(lab, DEFAULT_PROXY, 2)
    before = proxy_version(lab)
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as compose:
        compose.write(STACK)
        compose.flush()
        lab.docker(1, "stack", "deploy", "-c", compose.name, "demo8")
    try:
        tasks = {t["container"] for t in wait_running(lab, "demo8_web", 2)}
        wait_routed(lab, "stack.l7")
        assert {a.hostname for _ in range(3) for a in every_node(lab, "stack.l7")} <= tasks
        assert proxy_version(lab) == before  # the routing network was attached ahead of need
        removed = lab.docker(1, "stack", "rm", "demo8", check=False)
        print(f"docker stack rm demo8: rc {removed.returncode}, stdout {removed.stdout!r}, stderr {removed.stderr!r}")
        assert removed.returncode == 0 and not removed.stderr.strip()
        # Removed the first time (no error above); a node lists its copy of the stack's network
        # until its tasks there have stopped: wait, bounded (a make test run once saw it still listed right after).
        wait_for("demo8's networks gone", lambda: not lab.docker(
            1, "network", "ls", "-q", "--filter", "label=com.docker.stack.namespace=demo8").stdout.split(), timeout=60)
        wait_for("stack.l7 unrouted", lambda: {a.status for a in every_node(lab, "stack.l7")} == {404}, timeout=60)
        assert proxy_version(lab) == before
    finally:
        lab.docker(1, "stack", "rm", "demo8", check=False)


OWN_STACK = f"""version: "3.8"
services:
  web:
    image: {BUSYBOX_IMAGE}
    networks: [demo-network]
    deploy:
      labels:
        com.docker.lb.hosts: own.l7
        com.docker.lb.port: "80"
        com.docker.lb.network: demo-network
networks:
  demo-network: {{}}
"""


def test_with_a_routing_network_a_stack_on_its_own_network_is_named_not_joined_and_removed_the_first_time(l7):
    """Interlock's layout (the labelled service on the stack's own network only) while l7.toml names
    a RoutingNetwork: the proxies do not join `demo9_demo-network` (no roll), l7 deploy names the
    service in its log and /healthz, and `docker stack rm` removes everything the first time."""
    mesh = l7[0]
    lab = mesh.lab
    settled_replicas(lab, DEFAULT_PROXY, 2)
    before = proxy_version(lab)
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as compose:
        compose.write(OWN_STACK)
        compose.flush()
        lab.docker(1, "stack", "deploy", "-c", compose.name, "demo9")
    try:
        wait_running(lab, "demo9_web", 1)
        said = "service demo9_web: not routed: network demo9_demo-network is stack demo9's own"
        notes = wait_for("l7 deploy's /healthz names the stack's own network",
                         lambda: [n for n in l7_lab.deploy_health(mesh)[1].get("notes", []) if n.startswith(said)],
                         timeout=60, interval=1)
        print(f"l7 deploy /healthz note: {notes[0]}")
        assert f"put the service on {ROUTING}" in notes[0]
        with open(mesh.log_path("l7"), encoding="utf-8") as log:
            assert any(said in line for line in log)
        assert proxy_version(lab) == before  # the proxies never joined it
        removed = lab.docker(1, "stack", "rm", "demo9", check=False)
        started = time.monotonic()
        print(f"docker stack rm demo9: rc {removed.returncode}, stderr {removed.stderr!r}")
        assert removed.returncode == 0 and not removed.stderr.strip()
        # The swarm network is gone; node1's local copy of it goes with the stack's last container.
        wait_for("no network of demo9 left", lambda: lab.docker(1, "network", "ls", "-q", "--filter",
                                                                "label=com.docker.stack.namespace=demo9").stdout.split()
                 == [], timeout=60, interval=0.5)
        print(f"no network of demo9 listed {time.monotonic() - started:.1f} s after docker stack rm returned")
        assert proxy_version(lab) == before
    finally:
        lab.docker(1, "stack", "rm", "demo9", check=False)


def _alive(sockets: dict, container: str) -> set:
    """The websockets (by name) that still echo; a dead one is closed and dropped."""
    for name, sock in list(sockets.items()):
        try:
            sock.settimeout(3)
            ok = echo(sock, name) == f"{container}:{name}"
        except OSError:
            ok = False
        if not ok:
            sock.close()
            del sockets[name]
    return set(sockets)


def test_what_a_proxy_roll_cuts_upgraded_connections_and_what_the_routing_network_keeps(l7):
    """A service joining the RoutingNetwork does not roll the proxies: 0 websockets cut.  A
    service on a new network does: each old task stops after its stop grace and every upgraded
    connection through it is cut then (measured; the docs say so)."""
    mesh, _, leftovers = l7
    lab = mesh.lab
    labelled(lab, "ws10", "--network", ROUTING, image=PYTHON_IMAGE, hosts="ws10.l7", port="80",
             websocket_endpoints="/ws", network=ROUTING)
    lab.docker(1, "network", "create", "--driver", "overlay", "late10")
    leftovers["networks"].append("late10")
    leftovers["services"] += ["ws10", "join10", "late10"]
    sockets = {}
    try:
        (task,) = wait_running(lab, "ws10", 1)
        settled_replicas(lab, DEFAULT_PROXY, 2)
        wait_routed(lab, "ws10.l7")
        for i in range(6):
            n = lab.config.node_numbers[i % len(lab.config.node_numbers)]
            sockets[f"ws{i}-node{n}"] = open_websocket(lab.client_netns(), lab.node_address(n), HTTP_PORT, "ws10.l7", "/ws")
        assert len(_alive(sockets, task["container"])) == 6
        before = proxy_version(lab)
        labelled(lab, "join10", "--network", ROUTING, hosts="join10.l7", port="80", network=ROUTING)
        wait_running(lab, "join10", 1)
        wait_routed(lab, "join10.l7")
        assert proxy_version(lab) == before and len(_alive(sockets, task["container"])) == 6
        # A new network: the proxies roll (start-first), each old task stops after its stop grace.
        labelled(lab, "late10", "--network", "late10", hosts="late10.l7", port="80", network="late10")
        started, cuts = time.monotonic(), []
        wait_for("the proxies start rolling", lambda: proxy_version(lab) != before, timeout=60, interval=0.5)
        deadline = started + 240
        while sockets and time.monotonic() < deadline:
            alive = _alive(sockets, task["container"])
            cuts += [time.monotonic() - started] * (6 - len(cuts) - len(alive))
            spec = json.loads(lab.docker(1, "service", "inspect", DEFAULT_PROXY).stdout)[0]
            if (spec.get("UpdateStatus") or {}).get("State") == "completed" and len(replicas(lab, DEFAULT_PROXY)) == 2:
                break
            time.sleep(0.5)
        settled_replicas(lab, DEFAULT_PROXY, 2, timeout=180)
        alive = _alive(sockets, task["container"])
        cuts += [time.monotonic() - started] * (6 - len(cuts) - len(alive))
        print(f"proxy roll for a new network: {len(cuts)} of 6 websockets cut, at {[round(c, 1) for c in cuts]} s "
              "after the label change")
        assert len(cuts) == 6  # every upgraded connection ran through an old task: all cut at its stop
        fresh = open_websocket(lab.client_netns(), lab.node_address(1), HTTP_PORT, "ws10.l7", "/ws")
        with fresh:
            assert echo(fresh, "again") == f"{task['container']}:again"
    finally:
        for sock in sockets.values():
            sock.close()
