"""ingressmesh next to Docker's own IPVS routing mesh, on a real 3-node swarm (issue 18).

One service, one run, three meshes in turn: Docker's alone (the oracle), then ingressmesh with
nftables, then ingressmesh with IPVS.  Who took each new connection is counted by IPVS itself
(testbed/docker_mesh.py): while ingressmesh runs, Docker's fwmark services must count none of our
service's connections; after a hand-back they count every one.  The tests run in file order and
share the service; each records its measurements for the side-by-side table (conftest Results).
The IPVS mesh started here stays up for the L7 test (test_proxy_and_health_with_ipvs.py) when it
runs in the same session (`make ipvs-swarm` leaves it to `make ipvs-swarm-l7`) and is handed back
last (test_return_to_dockers_mesh_on_stop.py).
"""
from __future__ import annotations

import time

import pytest

import health_rows
import table_rows
import udp_row
from handing_back import hand_back
from ingressmesh.testbed.swarm_mesh import SwarmMesh
from ipvs_swarm_helpers import (PER_NODE, PORT, SLOW, STOP_TIMEOUT, all_docker_state, container_netns, counts, delta,
                                http_get, load_through_every_node, print_update_timeline, running_when, sbox,
                                settled_docker_state, spread, update_done, wait_routed)
from swarm_helpers import running_tasks, wait_for


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hc(lab, web):
    """The health-checked service of the health rows (health_rows.py): the benchmark's only."""
    if table_rows.wanted():
        yield from health_rows.hc_service(lab)
    else:
        yield None


@pytest.fixture(scope="module")
def udp(lab, web):
    """The UDP echo service of the fixed-port row (udp_row.py): the benchmark's only."""
    if table_rows.wanted():
        yield from udp_row.udp_service(lab)
    else:
        yield None


def reach_every_node(lab, web) -> dict[str, dict[str, int]]:
    """Per node: which tasks 30 connections through its published port reached."""
    return {f"node{n}": spread(lab.client_netns(), lab.node_address(n), PORT, 30) for n in lab.config.node_numbers}


def describe(lab, web, results, mesh: str, vip_caller: str) -> None:
    """The rows every mesh gets: reach, source address, timeouts; for ingressmesh a start-first
    rolling update under load through every node, which also makes Docker re-program its own mesh
    (every task is replaced).  The benchmark's run adds the rows of table_rows.py, and measures
    Docker's own mesh through the same update."""
    reach = reach_every_node(lab, web)
    results.put(mesh, "published port on every node", {
        node: f"{len(seen)} tasks" for node, seen in reach.items()})
    assert all(len(seen) == 3 for seen in reach.values()), reach
    vip_seen = spread(vip_caller, web["vip"], 80, 30)
    results.put(mesh, "VIP reach from a container", f"{len(vip_seen)} of 3 tasks")
    assert len(vip_seen) == 3, vip_seen
    peer = http_get(lab.client_netns(), lab.node_address(1), PORT, "/cgi-bin/peer").split()[-1]
    peer = peer.strip("[]").removeprefix("::ffff:")  # busybox httpd writes IPv4 as [::ffff:a.b.c.d]
    results.put(mesh, "source address the task sees",
                "the client's" if peer == lab.client_address else f"{peer} (not the client's)")
    sbox1 = sbox(lab, 1)
    ipvs_timeouts = sbox1.run(["ipvsadm", "-L", "--timeout"]).stdout.strip()
    established = sbox1.run(["sysctl", "-n", "net.netfilter.nf_conntrack_tcp_timeout_established"],
                            check=False).stdout.strip()
    results.put(mesh, "idle TCP timeout in ingress_sbox",
                {"ipvs": ipvs_timeouts, "conntrack established": established})
    if table_rows.wanted():
        table_rows.measure(lab, web, results, mesh, vip_caller, sbox1.path)
    if mesh != "docker" or table_rows.wanted():
        rolling_update_under_load(lab, web, results, mesh)
    if table_rows.wanted():
        table_rows.drain_a_node(lab, web, results, mesh)


def rolling_update_under_load(lab, web, results, mesh: str) -> None:
    """`docker service update --force --update-order start-first web` under load through every
    node; asserted for ingressmesh (no failed request), measured for Docker's own mesh."""
    def rolling_update() -> None:
        old = {t["id"] for t in running_tasks(lab, "web")}
        lab.docker(1, "service", "update", "--detach", "--force", "--update-order", "start-first", "web",
                   timeout=SLOW)
        web["tasks"] = wait_for("web's 3 tasks all replaced", lambda: running_when(lab, "web", 3, lambda t: t["id"] not in old),
                                timeout=SLOW, interval=2)
        wait_for("the rolling update to finish", lambda: update_done(lab), timeout=SLOW, interval=2)
        if mesh != "docker":
            wait_routed(lab, web, mesh.split("(")[1].rstrip(")"))

    since = time.time()
    ok, failures = load_through_every_node(lab, 3, rolling_update)
    if failures:
        print_update_timeline(lab, since, failures)
    results.put(mesh, "start-first rolling update under load: failed requests",
                f"{len(failures)} of {ok + len(failures)}")
    print(f"{mesh}: start-first rolling update under load: {len(failures)} failed of {ok + len(failures)}: "
          f"{failures[:5]}", flush=True)
    # The IPVS backend's refusals here (6 of 1889, then 3 of 1751) went with its forked netlink
    # sockets (ipvs/kernel.py now opens them in-thread); one run on a slow host refused 1 of 2131
    # (docs/known-limits.md).
    if mesh != "docker":
        assert not failures, failures[:5]


# --- the tests, in order -----------------------------------------------------------------------
def test_dockers_own_mesh_alone_answers_on_every_node(lab, web, hc, udp, results):
    """The oracle: with nothing of ours, Docker's IPVS mesh serves the published port and the VIP."""
    for n in lab.config.node_numbers:
        wait_for(f"Docker's mesh answers through node{n}",
                 lambda: http_get(lab.client_netns(), lab.node_address(n), PORT), timeout=SLOW, interval=1)
    caller = container_netns(lab, web["tasks"][0])
    before = counts(lab, web["network_id"])
    describe(lab, web, results, "docker", caller)
    after = counts(lab, web["network_id"])
    # Docker's own services counted what went through them (30 per node, and more on node 1).
    assert all(v >= 30 for v in delta(before, after, "port", "docker").values()), (before, after)
    results.put("docker", "which mesh took the connections", "Docker's IPVS (FWM from 256)")


def take_over(lab, web, results, meshes, backend: str) -> None:
    """Start ingressmesh with `backend`; every new connection must be ours from then on, and
    Docker's rules and services stay exactly as they were; then Docker re-programs its mesh
    (a forced update replaces every task) and the connections are still all ours."""
    name = f"ingressmesh ({backend})"
    docker_before = settled_docker_state(lab, web["network_id"])
    mesh = SwarmMesh(lab, backend=backend, stop_timeout=STOP_TIMEOUT)
    meshes[backend] = mesh
    mesh.up(timeout=SLOW)
    wait_routed(lab, web, backend)
    caller = container_netns(lab, web["tasks"][0])
    before = counts(lab, web["network_id"])
    for n in lab.config.node_numbers:
        seen = spread(lab.client_netns(), lab.node_address(n), PORT, PER_NODE)
        assert sum(seen.values()) == PER_NODE and len(seen) == 3, (n, seen)
    vip_seen = spread(caller, web["vip"], 80, 100)
    assert len(vip_seen) == 3, vip_seen
    after = counts(lab, web["network_id"])
    docker_port, docker_vip = delta(before, after, "port", "docker"), delta(before, after, "vip", "docker")
    ours_port = delta(before, after, "port", "ingressmesh")
    results.put(name, "which mesh took the connections",
                f"Docker's IPVS counted {sum(docker_port.values())} of {3 * PER_NODE} published-port and "
                f"{sum(docker_vip.values())} of 100 VIP connections"
                + (f"; ours counted {sum(ours_port.values())}" if backend == "ipvs" else ""))
    assert set(docker_port.values()) == {0}, f"Docker's mesh took published-port connections: {docker_port}"
    assert set(docker_vip.values()) == {0}, f"Docker's mesh took VIP connections: {docker_vip}"
    if backend == "ipvs":
        # Most likely (not yet proven): with conn_reuse_mode=0 (Docker's setting, and ours) a new connection from a client port
        # IPVS still has an entry for (TIME_WAIT) reuses that entry - ours, to the same task - and is
        # not counted again: two runs counted 881 and 890 of 900, Docker's services 0.
        assert sum(ours_port.values()) >= 0.95 * 3 * PER_NODE, ours_port
    assert all_docker_state(lab, web["network_id"]) == docker_before, "Docker's rules or IPVS services changed"
    # Everything else a mesh is measured on, including a rolling update that makes Docker
    # re-program its own mesh for every task: Docker still takes none of the connections.
    before = counts(lab, web["network_id"])
    describe(lab, web, results, name, caller)
    after = counts(lab, web["network_id"])
    assert set(delta(before, after, "port", "docker").values()) == {0}, (before, after)
    assert set(delta(before, after, "vip", "docker").values()) == {0}, (before, after)


def test_ingressmesh_nftables_takes_over_from_dockers_mesh(lab, web, hc, udp, results, meshes):
    take_over(lab, web, results, meshes, "nftables")


def test_a_restarted_nftables_agent_never_hands_a_connection_to_dockers_mesh(lab, web, results, meshes):
    restart_an_agent_under_load(lab, web, results, meshes, "nftables")


def test_cleanup_hands_the_nftables_mesh_back_to_docker(lab, web, results, meshes):
    hand_back(lab, web, results, meshes, "nftables", "cleanup")


def test_ingressmesh_ipvs_takes_over_from_dockers_mesh(lab, web, hc, udp, results, meshes):
    take_over(lab, web, results, meshes, "ipvs")


def restart_an_agent_under_load(lab, web, results, meshes, backend: str, nodes=(2,), agent_args=None) -> None:
    """The agents of `nodes` stopped (keeping their rules, the default) and started again, one at a
    time (with `agent_args` if given), under load through every node: no connection fails, and none
    falls to Docker's mesh meanwhile."""
    mesh = meshes[backend]
    before = counts(lab, web["network_id"])

    def restart() -> None:
        for n in nodes:
            mesh.stop(f"agent{n}")
            time.sleep(3)
            if agent_args is not None:
                mesh.agent_args = agent_args
            mesh.start_agent(n)
        mesh.wait_synced(SLOW)

    ok, failures = load_through_every_node(lab, 3, restart)
    after = counts(lab, web["network_id"])
    took = sum(delta(before, after, "port", "docker").values())
    which = ", ".join(f"node{n}" for n in nodes)
    results.put(f"ingressmesh ({backend})", "agent restart under load",
                f"{which}: {len(failures)} failed of {ok + len(failures)}; Docker's IPVS took {took}")
    print(f"agent restart under load ({backend}, {which}): {len(failures)} failed of {ok + len(failures)}: "
          f"{failures[:5]}")
    # 44 of 859 (nftables) and 52 of 991 (IPVS) failed here in the full run at 99d0c11: the
    # restarted agent's first apply guessed ingress_sbox's address (see hand_back).
    assert not failures, failures[:5]
    assert set(delta(before, after, "port", "docker").values()) == {0}, (before, after)


def test_a_restarted_agent_never_hands_a_connection_to_dockers_mesh(lab, web, results, meshes):
    """Every IPVS agent restarted in turn, the new ones with `--on-stop cleanup` (as a systemd unit
    may run them); the L7 test uses them, and test_return_to_dockers_mesh_on_stop.py stops them."""
    restart_an_agent_under_load(lab, web, results, meshes, "ipvs", nodes=lab.config.node_numbers,
                                agent_args=("--on-stop", "cleanup"))
