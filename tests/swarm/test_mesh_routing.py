"""The issue's tests 1, 2, 3 and 8 on a real 3-node swarm programmed by ingressmesh agents.

Docker itself forwards nothing here (no IPVS); every answer below went through our rules.
tests/ipvs_swarm/test_swarm_tests_with_ipvs.py runs most of them again with the ipvs backend on
the swarm lab inside a kernel with IPVS, next to Docker's own mesh (time bounds x SLOWDOWN there).
"""
from __future__ import annotations

import os
import time

import pytest

from ingressmesh.lab import PYTHON_IMAGE

from ingressmesh.testbed.swarm_probe import http_hostname, kernel_map, spread
from swarm_helpers import (LATENCY_SLOWDOWN, NETWORK, REQUEST_TIMEOUT, SLOWDOWN, active_on_node, create_service,
                           ingress_sbox, lb_netns, network_id, remove_service, running_tasks, summary, wait_for,
                           wait_running)

WEB = "web"
PORT = 8080


@pytest.fixture(scope="module")
def web(mesh):
    lab = mesh.lab
    create_service(lab, WEB, "--replicas", "3", "--replicas-max-per-node", "1", "--network", NETWORK,
                   "--publish", f"{PORT}:80")
    tasks = wait_running(lab, WEB, 3, timeout=60 * SLOWDOWN)
    for n in lab.config.node_numbers:
        wait_for(f"node{n} routes {WEB} to 3 tasks",
                 lambda: all(active_on_node(lab, n, t["id"]) for t in tasks), timeout=20 * SLOWDOWN)
    yield tasks
    remove_service(lab, WEB)


def test_published_port_on_every_node_reaches_every_task(mesh, web):
    lab = mesh.lab
    containers = {t["container"] for t in web}
    assert {t["node"] for t in web} == {"node1", "node2", "node3"}
    for n in lab.config.node_numbers:
        seen = spread(lab.client_netns(), lab.node_address(n), PORT, 30, REQUEST_TIMEOUT)
        print(f"client -> node{n}:{PORT}: {dict(seen)}")
        assert set(seen) == containers


def test_vip_and_docker_dns_from_a_container_on_node1(mesh, web):
    lab = mesh.lab
    vip = wait_for("web's VIP on ovl", timeout=30 * SLOWDOWN, check=lambda: next(
        (v["Addr"].split("/")[0] for v in lab.docker_client(1).api.inspect_service(WEB)["Endpoint"]["VirtualIPs"]
         if v["NetworkID"] == network_id(lab)), None))
    # The python image resolves through glibc (busybox-static's wget cannot use Docker's DNS).
    client = (
        "import socket, sys\n"
        "print(socket.gethostbyname(sys.argv[1]))\n"
        "for _ in range(30):\n"
        "    with socket.create_connection((sys.argv[1], 80), timeout=3) as s:\n"
        "        s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); data = b''\n"
        "        while chunk := s.recv(4096): data += chunk\n"
        "    print(data.split(b'\\r\\n\\r\\n')[-1].decode().strip())\n")
    out = lab.docker(1, "run", "--rm", "--network", NETWORK, PYTHON_IMAGE, "python3", "-c", client, WEB,
                     timeout=120 * SLOWDOWN).stdout.split()
    print(out)
    assert out[0] == vip  # the name resolves to the VIP through Docker's DNS
    assert set(out[1:]) == {t["container"] for t in web}  # and the VIP reaches tasks on all three nodes
    assert len(out) == 31


def _spread_across_nodes(lab, count: int) -> set:
    seen = set()
    for i in range(count):
        seen.add(http_hostname(lab.client_netns(), lab.node_address(1 + i % 3), PORT, REQUEST_TIMEOUT))
    return seen


def test_scale_up_and_down_converges_within_two_seconds(mesh, web):
    lab = mesh.lab
    try:
        lab.docker(1, "service", "update", "--detach", "--replicas-max-per-node", "0", "--replicas", "6", WEB)
        latencies = []
        pending, deadline = {}, time.monotonic() + 60 * SLOWDOWN
        known = {t["id"] for t in web}
        while time.monotonic() < deadline:
            for task in running_tasks(lab, WEB):
                if task["id"] not in known and task["id"] not in pending:
                    pending[task["id"]] = time.monotonic()  # we saw it running just now (polled every ~0.1 s)
            for task_id, since in list(pending.items()):
                if all(active_on_node(lab, n, task_id) for n in lab.config.node_numbers):
                    latencies.append(time.monotonic() - since)
                    known.add(task_id)
                    del pending[task_id]
            if len(known) == 6:
                break
            time.sleep(0.05)
        print(f"scale 3->6, running -> routed on all nodes: {summary(latencies)}")
        assert len(known) == 6 and max(latencies) < 2.0 * LATENCY_SLOWDOWN
        six = running_tasks(lab, WEB)
        assert wait_for("traffic to all 6", lambda: _spread_across_nodes(lab, 60) == {t["container"] for t in six},
                        timeout=30 * SLOWDOWN)

        lab.docker(1, "service", "scale", "--detach", f"{WEB}=2")
        scaled_at = time.monotonic()
        keep = wait_running(lab, WEB, 2, timeout=60 * SLOWDOWN)
        gone = {t["id"] for t in six} - {t["id"] for t in keep}
        wait_for("removed tasks out of every node's rules",
                 lambda: not any(active_on_node(lab, n, t) for n in lab.config.node_numbers for t in gone),
                 timeout=10 * SLOWDOWN, interval=0.05)
        removal = time.monotonic() - scaled_at
        print(f"scale 6->2: removed tasks out of all nodes' rules {removal * 1000:.0f} ms after the scale command")
        assert removal < 2.0 * LATENCY_SLOWDOWN
        assert _spread_across_nodes(lab, 30) == {t["container"] for t in keep}
    finally:
        lab.docker(1, "service", "update", "--detach", "--replicas", "3", "--replicas-max-per-node", "1", WEB)
        wait_running(lab, WEB, 3, timeout=60 * SLOWDOWN)


def test_dnsrr_and_host_mode_are_left_alone_and_removal_cleans_every_node(mesh):
    lab = mesh.lab
    net = network_id(lab)
    create_service(lab, "rr", "--replicas", "2", "--network", NETWORK, "--endpoint-mode", "dnsrr")
    create_service(lab, "hostport", "--replicas", "1", "--publish", "mode=host,published=8090,target=80")
    create_service(lab, "gone", "--replicas", "1", "--network", NETWORK, "--publish", "8091:80")
    try:
        gone = wait_running(lab, "gone", 1)
        wait_running(lab, "rr", 2)
        wait_running(lab, "hostport", 1)
        for n in lab.config.node_numbers:
            wait_for(f"node{n} routes 'gone'", lambda: active_on_node(lab, n, gone[0]["id"]), timeout=20)
        node_of_gone = int(gone[0]["node"].removeprefix("node"))
        lb = lb_netns(lab, node_of_gone, net)
        # the map is there and holds gone's VIP (the LB namespace is written just after ingress_sbox) ...
        vips = wait_for("gone's VIP in its node's LB namespace", lambda: (lambda text: text if
                        f'"gone {gone[0]["id"]}"' in text else None)(kernel_map(lb, "vip_backends")), timeout=5)
        assert '"rr ' not in vips and '"rr"' not in kernel_map(lb, "vip_services")  # ... and no dnsrr rules
        for n in lab.config.node_numbers:
            ingress = kernel_map(ingress_sbox(lab, n), "port_services")
            assert "8091" in ingress and "8090" not in ingress  # host mode: Docker's business
            host = lab.run_in_node(n, ["nft", "list", "table", "ip", "ingressmesh"], capture_output=True,
                                   text=True, timeout=10).stdout
            assert "8091" in host and "8090" not in host
        remove_service(lab, "gone")
        removed_at = time.monotonic()
        for n in lab.config.node_numbers:
            wait_for(f"'gone' removed from node{n}", lambda: "gone" not in kernel_map(ingress_sbox(lab, n), "port_services")
                     and "8091" not in lab.run_in_node(n, ["nft", "list", "table", "ip", "ingressmesh"],
                                                       capture_output=True, text=True, timeout=10).stdout, timeout=15)
        wait_for("'gone' removed from its node's lb namespace",
                 lambda: "gone" not in kernel_map(lb, "vip_services") + kernel_map(lb, "vip_backends")
                 or not os.path.exists(lb), timeout=15)
        print(f"service removed from every node's rules in {time.monotonic() - removed_at:.2f} s")
    finally:
        for name in ("rr", "hostport", "gone"):
            remove_service(lab, name)


def test_vip_from_an_attachable_container_on_a_node_without_tasks(mesh):
    """Docker gives a node an lb endpoint for any container on an overlay (`docker run
    --network` on an attachable one); its VIPs must work there too, not only where tasks run."""
    lab = mesh.lab
    lab.docker(1, "network", "create", "--driver", "overlay", "--attachable", "solo")
    create_service(lab, "only1", "--replicas", "1", "--constraint", "node.hostname==node1", "--network", "solo")
    try:
        (task,) = wait_running(lab, "only1", 1, timeout=60 * SLOWDOWN)
        client = ("import socket, sys, time\n"
                  "for _ in range(5):\n"
                  f"    for attempt in range({40 * int(SLOWDOWN)}):\n"
                  "        try:\n"
                  "            s = socket.create_connection(('only1', 80), timeout=2); break\n"
                  "        except OSError:\n"
                  "            time.sleep(0.25)  # the agent programs the new lb namespace within ~1 s\n"
                  "    s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); data = b''\n"
                  "    while chunk := s.recv(4096): data += chunk\n"
                  "    print(data.split(b'\\r\\n\\r\\n')[-1].decode().strip())\n")
        out = lab.docker(3, "run", "--rm", "--network", "solo", PYTHON_IMAGE, "python3", "-c", client,
                         timeout=120 * SLOWDOWN).stdout.split()
        print(f"from node3 (no task on 'solo') via only1's VIP: {out}")
        assert out == [task["container"]] * 5
    finally:
        remove_service(lab, "only1")
        wait_for("network solo removed (once only1's task is gone)",
                 lambda: lab.docker(1, "network", "rm", "solo", check=False).returncode == 0, timeout=30 * SLOWDOWN,
                 interval=0.5)
