"""Issue 21 on the real 3-node swarm: a service labelled io.ingressmesh.lb.source_ip=preserve sees
the client's own address through every node's published port, also across a start-first rolling
update under load.  Each answer of the lab's HTTP server carries the caller's address as the task
saw it (X-Peer): that is the task's log of who connected."""
from __future__ import annotations

import ipaddress
import json
import socket
import sys
import time

import pytest

from ingressmesh.dataplane.view import SOURCE_KEPT
from ingressmesh.lab import PYTHON_IMAGE
from ingressmesh.netns import Netns
from ingressmesh.plan_source_ip import SOURCE_IP_LABEL, docker_overlay_mac
from swarm_helpers import (NETWORK, active_on_node, create_service, ingress_sbox, remove_service, running_tasks,
                           wait_for, wait_running)
from ingressmesh.testbed.swarm_probe import LoadGenerator

SERVICE, PORT = "srcip", 8098
PER_NODE = 300


def who_and_peer(netns_path: str, address: str, port: int, timeout: float = 3.0) -> str:
    """One HTTP/1.0 GET; "<hostname> <X-Peer>" (which task answered, and whom it saw), or OSError."""
    with Netns.from_ref(netns_path).entered():
        sock = socket.create_connection((address, port), timeout=timeout)
    with sock:
        sock.settimeout(timeout)
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        data, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline and (chunk := sock.recv(4096)):
            data += chunk
    head = data.partition(b"\r\n\r\n")[0].decode(errors="replace").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    if not head[0].startswith("HTTP/1.") or " 200 " not in head[0] + " " or "X-Peer" not in headers:
        raise OSError(f"bad answer from {address}:{port}: {head[:1]!r}")
    return f"{headers['X-Hostname']} {headers['X-Peer']}"


@pytest.fixture(scope="module")
def kept(mesh):
    lab = mesh.lab
    # At most 2 per node, not 1: a start-first update must be able to start a task beside the old one.
    create_service(lab, SERVICE, "--replicas", "3", "--replicas-max-per-node", "2", "--network", NETWORK,
                   "--publish", f"{PORT}:80", "--label", f"{SOURCE_IP_LABEL}=preserve",
                   "--update-order", "start-first", "--stop-grace-period", "10s", image=PYTHON_IMAGE)
    tasks = wait_running(lab, SERVICE, 3)
    for n in lab.config.node_numbers:
        wait_for(f"node{n} routes {SERVICE}", lambda: all(active_on_node(lab, n, t["id"]) for t in tasks), timeout=30)
    yield tasks
    remove_service(lab, SERVICE)


def _through_every_node(lab, count: int) -> dict:
    found = {}
    for n in lab.config.node_numbers:
        answers, failed = [], []
        for _ in range(count):
            try:
                answers.append(who_and_peer(lab.client_netns(), lab.node_address(n), PORT))
            except OSError as err:
                failed.append(str(err))
        found[n] = (answers, failed)
    return found


def test_docker_gives_ingress_endpoints_the_mac_of_their_address(mesh, kept):
    """What the task-side marking relies on (plan_source_ip.docker_overlay_mac), checked on this Docker."""
    lab = mesh.lab
    subnet = lab.docker_client(1).api.inspect_network("ingress")["IPAM"]["Config"][0]["Subnet"]
    for n in lab.config.node_numbers:
        links = json.loads(Netns(ingress_sbox(lab, n)).run(["ip", "-j", "addr", "show"]).stdout)
        ours = [(link.get("address"), a["local"]) for link in links for a in link.get("addr_info", [])
                if a.get("family") == "inet" and ipaddress.IPv4Address(a["local"]) in ipaddress.IPv4Network(subnet)]
        print(f"node{n} ingress endpoint (MAC, address): {ours}")
        assert ours and all(mac == docker_overlay_mac(address) for mac, address in ours), ours


def test_every_task_sees_the_client_through_every_node(mesh, kept):
    lab = mesh.lab
    started = time.monotonic()
    results = _through_every_node(lab, PER_NODE)
    hostnames = {t["container"] for t in kept}
    for n, (answers, failed) in results.items():
        print(f"node{n}: {len(answers)} answered, {len(failed)} failed; "
              f"peers {sorted({a.split()[1] for a in answers})}")
        assert failed == [], f"node{n}: {failed[:5]}"
        assert {a.split()[1] for a in answers} == {lab.client_address}, f"node{n}"
        assert {a.split()[0] for a in answers} == hostnames, f"node{n}"
    print(f"{len(results) * PER_NODE} connections in {time.monotonic() - started:.1f} s")


def test_start_first_rolling_update_under_load_keeps_the_client_address(mesh, kept):
    lab = mesh.lab
    before = {t["id"] for t in kept}
    targets = [(lab.node_address(n), PORT) for n in lab.config.node_numbers]
    with LoadGenerator(lab.client_netns(), targets, pause=0.01, probe=who_and_peer) as load:
        lab.docker(1, "service", "update", "--detach", "--force", SERVICE)
        wait_for("the rolling update to replace every task",
                 lambda: len(tasks := running_tasks(lab, SERVICE)) == 3 and not before & {t["id"] for t in tasks},
                 timeout=180, interval=0.5)
        new = running_tasks(lab, SERVICE)
        for n in lab.config.node_numbers:
            wait_for(f"node{n} routes the new tasks", lambda: all(active_on_node(lab, n, t["id"]) for t in new),
                     timeout=30)
        time.sleep(2)  # load on the new tasks alone
    result = load.result
    peers = {key.split()[1] for key in result.seen}
    print(f"rolling update under load: {result.ok} answered, {len(result.failures)} failed, peers {sorted(peers)}")
    assert result.failures == [], result.failures[:5]
    assert peers == {lab.client_address}
    assert {key.split()[0] for key in result.seen} >= {t["container"] for t in new}


def test_show_says_which_published_ports_keep_source_addresses(mesh, kept):
    lab, config = mesh.lab, mesh.lab.config
    show = lab.run_in_node(2, [sys.executable, "-m", "ingressmesh", "show", "--json", "--backend", "nftables",
                               "--exec-root", config.exec_root(2), "--docker-pidfile", config.pidfile(2),
                               "--controller", mesh.controller_url, "--token-file", mesh.token_file],
                           capture_output=True, text=True, timeout=60)
    assert show.returncode == 0, show.stderr
    ingress = next(rows for ns, rows in json.loads(show.stdout).items() if ns.endswith("/ingress_sbox"))
    notes = {r["service"]: r["note"] for r in ingress}
    assert notes[SERVICE] == SOURCE_KEPT, notes
    assert all(note != SOURCE_KEPT for service, note in notes.items() if service != SERVICE), notes
