"""The rows of the side-by-side table that only its benchmark measures (`make bench-side-by-side`,
INGRESSMESH_SIDE_BY_SIDE=1): connection rates, the health rows, the fixed-port UDP flow, a node
drain, and Docker's own mesh through a rolling update.

They are out of `make test` because they cost what CI cannot pay: under emulation the health rows'
service alone (3 tasks checked every 2 s, each check a `docker exec`) kept the guest's two CPUs
~60 % busy, and the three meshes' rows took ~35 of the rig's 96 min on a slow host.  What
`make test` proves next to Docker's mesh (who takes each connection, Docker's rules untouched, a
rolling update and a dockerd restart not taking the traffic back, the hand-backs) stays there."""
from __future__ import annotations

import os
import re
import subprocess

import health_rows
import udp_row
from ipvs_swarm_helpers import PORT, SLOW, load_through_every_node, wait_routed
from swarm_helpers import running_tasks, wait_for

SWITCH = "INGRESSMESH_SIDE_BY_SIDE"


def wanted() -> bool:
    """Whether this run measures the benchmark's rows too (the environment says so)."""
    return os.environ.get(SWITCH) == "1"


def rate(netns: str, address: str, port: int, seconds: int = 4) -> float:
    """Requests per second with wrk (4 connections; busybox httpd closes every connection, so
    each request is a new connection), from inside a namespace."""
    done = subprocess.run(["nsenter", f"--net={netns}", "wrk", "-t1", "-c4", f"-d{seconds}s", "--timeout", "3s",
                           f"http://{address}:{port}/"], capture_output=True, text=True, timeout=seconds + 30)
    found = re.search(r"Requests/sec:\s+([0-9.]+)", done.stdout)
    assert done.returncode == 0 and found, f"wrk to {address}:{port}: {done.stdout} {done.stderr}"
    return float(found.group(1))


def measure(lab, web, results, mesh: str, vip_caller: str, sbox_path: str) -> None:
    """Rates (against a direct connection to a task from node 1's ingress_sbox, on the ingress
    network, in the same minute), the health rows and the UDP row for `mesh`."""
    direct = rate(sbox_path, web["tasks"][0]["addresses"]["ingress"], 80)
    via_port = rate(lab.client_netns(), lab.node_address(1), PORT)
    via_vip = rate(vip_caller, web["vip"], 80)
    results.put(mesh, "new connections/s: published port / direct",
                f"{via_port:.0f} / {direct:.0f} = {via_port / direct:.2f}x")
    results.put(mesh, "new connections/s: VIP from a container / direct",
                f"{via_vip:.0f} / {direct:.0f} = {via_vip / direct:.2f}x")
    health_rows.measure(lab, results, mesh)
    udp_row.measure(lab, results, mesh)


def drain_a_node(lab, web, results, mesh: str) -> None:
    """`docker node update --availability drain` of a worker holding a task of web, under load
    through every node: Swarm moves the task (which drains DRAIN s on SIGTERM, see SERVER); then the
    node is made active again (its tasks stay where they went)."""
    n = next((int(t["node"].removeprefix("node")) for t in web["tasks"] if t["node"] != "node1"), 2)

    def moved() -> list[dict]:
        tasks = running_tasks(lab, "web")
        return tasks if len(tasks) == 3 and all(t["node"] != f"node{n}" for t in tasks) else []

    def drain() -> None:
        lab.docker(1, "node", "update", "--availability", "drain", f"node{n}", timeout=SLOW)
        web["tasks"] = wait_for(f"web's 3 tasks running off node{n}", moved, timeout=SLOW, interval=1)
        if mesh != "docker":
            wait_routed(lab, web, mesh.split("(")[1].rstrip(")"))

    try:
        ok, failures = load_through_every_node(lab, 3, drain)
    finally:
        lab.docker(1, "node", "update", "--availability", "active", f"node{n}", timeout=SLOW)
    # hc's task moved too and starts `starting`: healthy before anything compares Docker's services.
    health_rows.healthy_everywhere(lab)
    results.put(mesh, "node drained under load: failed requests",
                f"{len(failures)} of {ok + len(failures)} (node{n}'s task moved)")
    if mesh != "docker":
        assert not failures, failures[:5]
