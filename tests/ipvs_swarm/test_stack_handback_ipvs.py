"""ingressmesh installed the swarm way (`ingressmesh install --stack`, IPVS backend) next to
Docker's own IPVS mesh (issue 18, point 3): a dockerd restart, after which Docker has re-programmed
its whole mesh on that node, does not take the traffic back from us; `docker stack rm ingressmesh`
hands every published port and VIP back to Docker's mesh with no failed request under load.

`make ipvs-swarm-stack` runs it on its own guest, where it makes the `web` service itself; in a
run of the whole directory (`make bench-side-by-side`) it comes after the other modules (file
order) and takes the `web` they made.  The agents are containers here:
the lab's ingressmesh image is in every node (the rig imports it at `up`).
"""
from __future__ import annotations

import threading
import time
import pytest

from ingressmesh.lab.swarm import wait_ready
from ingressmesh.testbed.docker_mesh import our_ipvs_dests
from ingressmesh.testbed.stack_mesh import StackMesh
from ingressmesh.testbed.swarm_probe import LoadGenerator
from ipvs_swarm_helpers import (PORT, SLOW, all_docker_state, assert_docker_took_them, container_netns, counts, delta,
                                docker_mesh_lag, ensure_image, ensure_web, if_present, lb, load_through_every_node, print_node_pressure,
                                running_when, sbox, settled_docker_state, spread,
                                tables_left, update_done, wait_routed)
from swarm_helpers import wait_for

MESH = "ingressmesh (ipvs)"
RESTARTED = 3  # the node whose dockerd restarts: a worker, left with no task of web first
PER_NODE = 150


@pytest.fixture(scope="module")
def stack(lab, meshes):
    """web, and ingressmesh deployed as a stack with the IPVS backend, removed at the end.  Host
    processes an earlier module left running (it failed before its hand-back) are stopped first:
    two meshes would fight over the same namespaces."""
    for backend in list(meshes):
        meshes.pop(backend).down()
    web = ensure_web(lab)
    started = time.monotonic()
    for n in lab.config.node_numbers:  # the rig imports it at `up`: alone (pytest -k) too
        ensure_image(lab, n, "proxy")
    print(f"ingressmesh image in every node after {time.monotonic() - started:.0f} s", flush=True)
    mesh = StackMesh(lab, backend="ipvs")
    try:
        try:
            mesh.up(timeout=2 * SLOW)
        except TimeoutError:  # which of node1's containers never answered, and what their checks said
            print(lab.docker(1, "stack", "ps", "--no-trunc", "ingressmesh", check=False).stdout)
            print_node_pressure(lab, 1)
            raise
        print(f"stack deployed, every agent in sync, in {mesh.deployed_in:.0f} s", flush=True)
        print_stack_containers(lab)
        wait_routed(lab, web, "ipvs")
        yield mesh, web
    finally:
        print(mesh.tails())
        mesh.down()


def print_stack_containers(lab) -> None:
    """Every container of the stack on every node, exited ones too (an agent Docker killed as
    unhealthy and restarted shows here, not in `docker stack ps` once it is replaced)."""
    for n in lab.config.node_numbers:
        listed = lab.docker(n, "ps", "-a", "--filter", "label=com.docker.stack.namespace=ingressmesh",
                            "--format", "{{.Names}} {{.Status}}", check=False)
        print(f"node{n}: stack containers: {listed.stdout.strip() or listed.stderr.strip()}", flush=True)


def print_agents_state(lab) -> None:
    """For agents that did not get back in sync: the stack's tasks, and each node's containers and
    their health-check logs."""
    print(lab.docker(1, "stack", "ps", "--no-trunc", "ingressmesh", check=False).stdout)
    for n in lab.config.node_numbers:
        print_node_pressure(lab, n, "ingressmesh_agent")
        for cid in lab.docker(n, "ps", "-aq", "--filter", "label=com.docker.swarm.service.name=ingressmesh_agent",
                              check=False).stdout.split():
            logs = lab.docker(n, "logs", "--tail", "25", cid, check=False)
            print(f"--- node{n} agent container {cid} ---\n{logs.stdout}{logs.stderr}")


def took_by_mesh(lab, web, per_node: int, vip: int = 0) -> dict:
    """`per_node` connections through every node's published port and `vip` through the VIP from a
    task's container; the connections each mesh's IPVS services counted, per node and where."""
    before = counts(lab, web["network_id"])
    for n in lab.config.node_numbers:
        seen = spread(lab.client_netns(), lab.node_address(n), PORT, per_node)
        assert sum(seen.values()) == per_node, (n, seen)
    if vip:
        seen = spread(container_netns(lab, web["tasks"][0]), web["vip"], 80, vip)
        assert sum(seen.values()) == vip, seen
    after = counts(lab, web["network_id"])
    return {(where, mesh): delta(before, after, where, mesh) for where in ("port", "vip")
            for mesh in ("docker", "ingressmesh")}


def test_the_stack_takes_over_from_dockers_mesh(lab, stack, results):
    mesh, web = stack
    took = took_by_mesh(lab, web, PER_NODE, vip=30)
    docker_port, docker_vip = sum(took["port", "docker"].values()), sum(took["vip", "docker"].values())
    results.put(MESH, "which mesh took the connections: installed as a stack",
                f"Docker's IPVS counted {docker_port} of {3 * PER_NODE} published-port and {docker_vip} of 30 "
                f"VIP connections (stack deployed and in sync in {mesh.deployed_in:.0f} s)")
    assert set(took["port", "docker"].values()) == {0}, took
    assert set(took["vip", "docker"].values()) == {0}, took


def test_a_dockerd_restart_does_not_take_the_traffic_back(lab, stack, results):
    """Node3's dockerd restarts (SIGTERM, as `systemctl restart docker`): its containers stop, our
    agent there too, its ingress_sbox is removed and made again with Docker's rules and IPVS
    service.  web has no task on node3 (moved off first), so the other nodes must not notice:
    0 failed through node1 and node2.  Through node3 itself nothing can answer until its dockerd is
    back (counted, not judged).  Once our agent is back there, Docker's services count nothing."""
    mesh, web = stack
    lab.docker(1, "service", "update", "--detach", "--constraint-add", f"node.hostname!=node{RESTARTED}", "web",
               timeout=SLOW)
    web["tasks"] = wait_for("web's 3 tasks running off the restarted node",
                            lambda: running_when(lab, "web", 3, lambda t: t["node"] != f"node{RESTARTED}"),
                            timeout=SLOW, interval=2)
    wait_for("web's update finished", lambda: update_done(lab), timeout=SLOW, interval=2)
    wait_routed(lab, web, "ipvs")
    restart, done = {}, threading.Event()

    def restart_dockerd() -> None:
        with LoadGenerator(lab.client_netns(), [(lab.node_address(RESTARTED), PORT)], pause=0.02,
                           limit=20000) as own:
            restart["dockerd"] = lab.restart_dockerd(RESTARTED, timeout=SLOW)
            watcher = threading.Thread(target=watch_dockers_mesh, name="watch-docker", daemon=True)
            watcher.start()
            wait_ready(lab, SLOW)
            try:
                mesh.wait_synced(SLOW)
            except TimeoutError:
                print_agents_state(lab)
                raise
            wait_routed(lab, web, "ipvs")
            restart["ours again"] = time.monotonic()
            time.sleep(2)
            watcher.join(60)  # Docker's mesh is recorded, not awaited: at most a minute more
            restart["watched"] = time.monotonic()
            done.set()
            watcher.join(30)
        restart["node3"] = own.result

    def watch_dockers_mesh() -> None:
        """When Docker's own IPVS service on the restarted node lists web's tasks again (bounded):
        says whether Docker's mesh or ours was back there first."""
        deadline = time.monotonic() + SLOW
        while time.monotonic() < deadline and not done.is_set():
            try:
                if f"node{RESTARTED}" not in docker_mesh_lag(lab):
                    restart["docker's mesh again"] = time.monotonic()
                    return
            except Exception:  # noqa: BLE001 - its ingress_sbox is not there yet: keep polling
                pass
            done.wait(1)

    started = time.monotonic()
    ok, failures = load_through_every_node(lab, 3, restart_dockerd,
                                           nodes=[n for n in lab.config.node_numbers if n != RESTARTED])
    node3 = restart["node3"]
    back_after = restart["ours again"] - started - 2  # the load ran 2 s before the restart
    docker_back = restart.get("docker's mesh again")
    docker_after = (f"{docker_back - started - 2:.0f} s" if docker_back
                    else f"not seen within {restart['watched'] - started - 2:.0f} s")
    print_stack_containers(lab)
    took = took_by_mesh(lab, web, PER_NODE)
    results.put(MESH, "dockerd restarted on a node (Docker re-programs its mesh there)",
                f"stack install; node{RESTARTED}'s dockerd back in {restart['dockerd']:.0f} s, Docker's own service "
                f"there listing web's tasks after {docker_after}, our rules there after {back_after:.0f} s: "
                f"{len(failures)} failed of {ok + len(failures)} through the other nodes, "
                f"{len(node3.failures)} of {node3.ok + len(node3.failures)} through node{RESTARTED} itself until then; "
                f"afterwards Docker's IPVS counted {sum(took['port', 'docker'].values())} of {3 * PER_NODE}")
    print(f"dockerd restart: through node{RESTARTED} {node3.ok} ok, failures {node3.failures[:3]}...")
    assert not failures, failures[:5]
    assert set(took["port", "docker"].values()) == {0}, took


def test_docker_stack_rm_hands_every_port_and_vip_back_with_no_failed_request(lab, stack, results):
    mesh, web = stack
    docker_before = settled_docker_state(lab, web["network_id"])  # node3's dockerd may still re-program after its restart
    removed = {}

    def stack_rm() -> None:
        removed["seconds"] = mesh.remove(timeout=SLOW)

    ok, failures = load_through_every_node(lab, 5, stack_rm)
    print(f"docker stack rm under load: {len(failures)} failed of {ok + len(failures)}: {failures[:5]}")
    took = took_by_mesh(lab, web, 20, vip=30)
    results.put(MESH, "`docker stack rm ingressmesh` under load (stack install)",
                f"{len(failures)} failed of {ok + len(failures)} (every agent gone in {removed['seconds']:.0f} s); "
                f"then Docker's IPVS counted {sum(took['port', 'docker'].values())} of 60 published-port and "
                f"{sum(took['vip', 'docker'].values())} of 30 VIP connections")
    assert not failures, failures[:5]
    assert tables_left(lab, web["network_id"]) == []
    for n in lab.config.node_numbers:
        for ns in (sbox(lab, n), lb(lab, n, web["network_id"])):
            assert if_present(our_ipvs_dests, ns, {}) == {}, (n, ns.path)
    assert_docker_took_them(took["port", "docker"], took["port", "ingressmesh"], lab.config.node_numbers)
    assert sum(took["vip", "docker"].values()) >= 1 and set(took["vip", "ingressmesh"].values()) == {0}, took
    assert all_docker_state(lab, web["network_id"]) == docker_before, "Docker's rules or IPVS services changed"
