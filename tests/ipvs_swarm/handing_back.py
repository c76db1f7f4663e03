"""Handing every published port and VIP back to Docker's own mesh under load (issue 18, point 3):
`ingressmesh cleanup` after the nftables phase, the agents' `--on-stop cleanup` after the IPVS
phase and the L7 test (test_return_to_dockers_mesh_on_stop.py)."""
from __future__ import annotations

import subprocess
import sys
import time

from ipvs_swarm_helpers import (PORT, SLOW, all_docker_state, assert_docker_took_them, counts, delta, docker_mesh_lag,
                                if_present, lb, load_through_every_node, sbox, settled_docker_state, spread, tables_left)
from swarm_helpers import wait_for


def hand_back(lab, web, results, meshes, backend: str, how: str) -> None:
    """Give every published port and VIP back to Docker's mesh under load through every node:
    `how` = "cleanup" (stop the agents, which keep the rules, then `ingressmesh cleanup` on every
    node) or "on-stop" (agents running with `--on-stop cleanup`, as a systemd unit may, stopped)."""
    assert backend in meshes, f"no ingressmesh ({backend}) running: test_next_to_dockers_mesh.py starts it, run it first"
    mesh = meshes.pop(backend)
    # Docker keeps its own mesh up to date while ours carries the traffic, but it may lag (gossip,
    # under emulation): a real server it still holds for a replaced task would fail requests after
    # any hand-back.  Wait (bounded) until it lists web's tasks on every node; what lagged is recorded.
    started, lag = time.monotonic(), docker_mesh_lag(lab)
    if lag:
        print(f"Docker's own mesh lags web's tasks before the hand-back: {lag}")
        try:
            wait_for("Docker's own mesh to list web's tasks on every node", lambda: not docker_mesh_lag(lab),
                     timeout=SLOW, interval=1)
        except AssertionError as err:  # Docker's own state: recorded, the hand-back is measured anyway
            print(err)
    still = docker_mesh_lag(lab)
    results.put(f"ingressmesh ({backend})", f"Docker's mesh before the {how} hand-back",
                f"lagged {time.monotonic() - started:.0f} s: {lag}; then {still or 'up to date'}" if lag else "up to date")
    docker_before = settled_docker_state(lab, web["network_id"])

    def stop_and_clean() -> None:
        mesh.down()
        print(mesh.tails())  # popped: the session's teardown of `meshes` no longer prints its logs
        if how != "cleanup":
            return
        for n in lab.config.node_numbers:
            argv = [sys.executable, "-m", "ingressmesh", "cleanup", "--backend", backend]
            lb_ns = lb(lab, n, web["network_id"])
            live_lb = [lb_ns.path] if if_present(lambda ns: ns.run(["true"]), lb_ns, None) else []
            for ref in [lab.node_netns(n), sbox(lab, n).path, *live_lb]:  # no lb_ left on a node without a task
                argv += ["--netns", ref]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=SLOW)
            assert done.returncode == 0, done.stderr

    ok, failures = load_through_every_node(lab, 5, stop_and_clean)
    label = "`ingressmesh cleanup`" if how == "cleanup" else "agents stopped with `--on-stop cleanup`"
    results.put(f"ingressmesh ({backend})", "hand-back to Docker's mesh under load",
                f"{label}: {len(failures)} failed of {ok + len(failures)}")
    print(f"hand-back ({label}): {len(failures)} failed of {ok + len(failures)}: {failures}")
    # The full run at 99d0c11 failed 305 of 1328 here (and 123 of 807 on-stop), all refused through
    # node2: its agent, restarted in the test before, had made its first apply before reading
    # ingress_sbox's address and guessed 172.18.0.2 (likely: reproduced on the host lab, where
    # node2's docker_gwbridge is an operator's own subnet; fixed: the agent waits for the read).
    assert not failures, failures[:5]
    assert tables_left(lab, web["network_id"]) == []
    before = counts(lab, web["network_id"])
    for n in lab.config.node_numbers:
        spread(lab.client_netns(), lab.node_address(n), PORT, 20)
    after = counts(lab, web["network_id"])
    docker_counts = delta(before, after, "port", "docker")
    print(f"after the {how} hand-back Docker's services counted {docker_counts} of 20 per node")
    assert_docker_took_them(docker_counts, delta(before, after, "port", "ingressmesh"), lab.config.node_numbers)
    assert all_docker_state(lab, web["network_id"]) == docker_before
