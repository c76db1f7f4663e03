"""The IPVS backend on the swarm lab next to Docker's own IPVS mesh (issue 18, point 5): the L7
layer (a proxy service whose published port our IPVS services carry, a labelled host served
through every node).  Health is measured for every mesh: health_rows.py.  `make ipvs-swarm-l7`
runs it alone on a guest of its own, with an IPVS mesh of its own; in a session with
test_next_to_dockers_mesh.py (the side-by-side benchmark) it runs after it (file order) with the
IPVS mesh that module left running, whose hand-back follows (test_return_to_dockers_mesh_on_stop.py).

The proxy image is large for a guest reading it over 9p, so it goes to node1 only and the proxy
is pinned there (ProxyConstraints): what crosses nodes is the routing mesh, which is the point."""
from __future__ import annotations

import os
import sys
import time

import pytest

from ingressmesh.netns import Netns
from ingressmesh.testbed import l7_lab
from ingressmesh.testbed.docker_mesh import STATS_SETTLE_SECONDS, connections_by_mesh
from ingressmesh.testbed.l7_probe import http_request
from ingressmesh.testbed.swarm_mesh import SwarmMesh

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "swarm"))
from l7_helpers import labelled, settled_replicas, wait_routed  # noqa: E402
from swarm_helpers import remove_service, wait_for, wait_running  # noqa: E402
from ipvs_swarm_helpers import STOP_TIMEOUT, ensure_image, print_node_pressure  # noqa: E402

PROXY_PORT = 8081
PROXY = "ingressmesh-proxy"
HOST = "app.l7"
SLOW = 300  # seconds: anything Docker does under software emulation
PER_NODE = 30


@pytest.fixture(scope="module")
def l7_mesh(lab, meshes):
    """ingressmesh (IPVS backend) with one proxy replica on node1 and a labelled 2-task app.  The
    IPVS mesh test_next_to_dockers_mesh.py left running when there is one (its hand-back follows
    in test_return_to_dockers_mesh_on_stop.py); alone (pytest -k, or that module failed before
    starting it) this module starts and stops its own."""
    started = time.monotonic()
    ensure_image(lab, 1, "proxy")
    print(f"proxy image in node1 in {time.monotonic() - started:.0f} s", flush=True)
    # The other module made it; alone (pytest -k), this module makes it itself.
    lab.docker(1, "network", "create", "--driver", "overlay", "--attachable", "ovl", check=False)
    mesh, own = meshes.get("ipvs"), "ipvs" not in meshes
    if own:
        mesh = SwarmMesh(lab, backend="ipvs", stop_timeout=STOP_TIMEOUT)
        mesh.up(timeout=SLOW)
    try:
        # The app first: the proxy is then created on its network (one proxy start under emulation,
        # ~2 min, instead of two: a network added later is attached by a start-first update).
        steps = {}  # what the setup's time went to (under emulation it varied from 142 to 348 s)
        labelled(lab, "l7app", "--replicas", "2", hosts=HOST, port="80")
        tasks = wait_running(lab, "l7app", 2, timeout=SLOW)
        steps["app running"] = time.monotonic()
        config = l7_lab.extension("default", mesh.controller_url, PROXY_PORT, replicas=1)
        l7_lab.deploy(mesh, config + 'ProxyConstraints = ["node.role==manager"]\n')
        try:  # as an operator would before testing: the replica settled and serving the host
            wait_for(f"{PROXY} created", lambda: lab.docker(1, "service", "inspect", PROXY, check=False).returncode == 0,
                     timeout=SLOW, interval=1)
            steps["proxy service created"] = time.monotonic()
            settled_replicas(lab, PROXY, 1, timeout=2 * SLOW)
            steps["proxy healthy and settled"] = time.monotonic()
            wait_routed(lab, HOST, timeout=SLOW)
        except AssertionError:
            print_proxy_state(lab)
            raise
        print(f"proxy settled and routing {HOST} {time.monotonic() - started:.0f} s after the import began: "
              + ", ".join(f"{step} at {at - started:.0f} s" for step, at in steps.items()), flush=True)
        yield mesh, tasks
    finally:
        print(mesh.tails())
        mesh.stop("l7")
        for service in ("l7app", PROXY):
            remove_service(lab, service)
        if own:
            mesh.down()


def print_proxy_state(lab) -> None:
    """What Swarm and the proxy container say, for a proxy that never became ready."""
    print(lab.docker(1, "service", "ps", "--no-trunc", PROXY, check=False).stdout)
    for cid in lab.docker(1, "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={PROXY}").stdout.split():
        logs = lab.docker(1, "logs", "--tail", "40", cid, check=False)
        print(f"--- proxy container {cid} ---\n{logs.stdout}{logs.stderr}")
    print_node_pressure(lab, 1, PROXY)


def every_node(lab) -> list:
    try:
        return [http_request(lab.client_netns(), lab.node_address(n), PROXY_PORT, HOST, timeout=5)
                for n in lab.config.node_numbers]
    except OSError:
        return []


def sbox_counts(lab) -> dict[int, dict[str, int]]:
    """Connections each mesh's IPVS services took so far in every node's ingress_sbox."""
    return {n: connections_by_mesh(Netns(f"{lab.netns_dir(n)}/ingress_sbox")) for n in lab.config.node_numbers}


def test_a_labelled_host_is_served_through_every_node_by_our_ipvs_mesh(lab, l7_mesh, results):
    mesh, tasks = l7_mesh
    wait_for(f"{HOST} through every node", lambda: (answers := every_node(lab)) and all(a.status == 200 for a in answers),
             timeout=SLOW, interval=2)
    before = sbox_counts(lab)
    seen: dict[str, int] = {}
    failed = []
    for n in lab.config.node_numbers:
        for _ in range(PER_NODE):
            try:
                answer = http_request(lab.client_netns(), lab.node_address(n), PROXY_PORT, HOST, timeout=5)
            except OSError as err:
                failed.append((n, repr(err)))
                continue
            if answer.status != 200:
                failed.append((n, answer.status))
                continue
            seen[answer.hostname] = seen.get(answer.hostname, 0) + 1
    time.sleep(STATS_SETTLE_SECONDS)
    after = sbox_counts(lab)
    took = {n: {m: after[n][m] - before[n][m] for m in after[n]} for n in after}
    print(f"{HOST}: answered by {seen}, failed {failed}; connections taken per node's ingress_sbox: {took}")
    assert not failed, (failed, lab.docker(1, "service", "ps", "--no-trunc", PROXY, check=False).stdout)
    assert set(seen) == {t["container"] for t in tasks}, seen  # both app tasks, through the one proxy
    # Every node's published port: ours took the connections (IPVS may count a reused entry once
    # less, see the other module), Docker's services none of them.
    assert all(t["docker"] == 0 and t["ingressmesh"] >= 0.9 * PER_NODE for t in took.values()), took
    results.put("ingressmesh (ipvs)", "L7 host routing through every node (proxy on node1)",
                f"{PER_NODE * len(lab.config.node_numbers) - len(failed)} of {PER_NODE * len(lab.config.node_numbers)} answered 200, "
                f"Docker's IPVS took {sum(t['docker'] for t in took.values())}")
