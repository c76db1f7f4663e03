"""The two processes of the live pipeline benchmark: a real controller serving a synthetic swarm,
and an agent following it.  Run by bench/live_pipeline.py, one process each, so CPU and memory
are each process's own.

    live_roles.py controller SERVICES TOKEN_FILE   prints "port N", then serves until stdin closes
    live_roles.py agent URL TOKEN_FILE [--whole]   prints "took VERSION MONOTONIC KIND HEALTH" per update

The controller is ingressmesh's own Controller (merge, store, HTTP API, the 1 s publish tick);
only its swarm provider holds a fixed synthetic state instead of reading a manager, since the
benchmark times what happens after the swarm or a node reports a change.  The agent is the
agent's own follow path (ControllerClient.follow_update + ClusterFollower + plan) without the
kernel apply, which is measured by control_plane.py.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import synthetic  # noqa: E402  (bench/ is not a package)
from ingressmesh.agent.cluster_follower import ClusterFollower  # noqa: E402
from ingressmesh.agent.controller_client import ControllerClient  # noqa: E402
from ingressmesh.controller.app import Controller, ControllerConfig  # noqa: E402
from ingressmesh.plan import PlanOptions  # noqa: E402
from ingressmesh.swarm.state import SwarmState  # noqa: E402

ENDPOINTS = 10
# 10,000 services x 10 tasks over 3 nodes would put 33,000 containers on a node, which no
# dockerd runs (nor does a report of that size fit the API's 1 MiB body limit): the live
# measurement spreads them over 30 nodes, ~3,300 containers each, still far above real nodes.
NODES = 30
NODE_IDS = synthetic.node_ids(NODES)
VICTIM_NODE = "node-1"


def synthetic_state(services: int) -> SwarmState:
    """The synthetic swarm as a manager lists it (no lb addresses: those come from reports)."""
    cluster = synthetic.build_cluster(services, ENDPOINTS, NODES)
    network = dataclasses.replace(cluster.networks[0], lb_addresses=())
    return SwarmState(nodes=cluster.nodes, networks=(network,), services=cluster.services, tasks=cluster.tasks)


def victim(state: SwarmState):
    return next(t for t in state.tasks if t.node_id == VICTIM_NODE)


def node_report(state: SwarmState, node_id: str, health: dict) -> dict:
    """What an agent reports: every local container's health, and its lb address."""
    index = NODE_IDS.index(node_id)
    containers = {t.id: {"health": health.get(t.id, "healthy"), "stopping": False}
                  for t in state.tasks if t.node_id == node_id}
    return {"node_id": node_id, "containers": containers, "sent_at": time.time(),
            "lb_addresses": {synthetic.NETWORK_ID: f"10.0.0.{2 + index}"}}


class _FixedSwarm:
    """Stands in for SwarmProvider: the state is given, nothing is polled."""

    def __init__(self, state: SwarmState):
        self.state, self.last_success, self.last_error = state, time.time(), ""
        self.thread = threading.current_thread()

    def poke(self, full: bool = False) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def run_controller(services: int, token_file: str) -> None:
    token = open(token_file, encoding="utf-8").read().strip()
    controller = Controller(ControllerConfig(listen=("127.0.0.1", 0)), token)
    controller.provider = _FixedSwarm(synthetic_state(services))
    controller.server.start()
    print(f"port {controller.server.port}", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.wait(1.0):  # the controller's own idle tick
        controller.publish()
    controller.store.close()
    controller.server.stop()


def run_agent(url: str, token_file: str, whole: bool) -> None:
    token = open(token_file, encoding="utf-8").read().strip()
    client = ControllerClient([url], token)
    follower = ClusterFollower(synthetic.LOCAL_NODE)
    victim_id = os.environ["VICTIM"]  # the task whose health the benchmark flips
    while True:
        update = client.follow_update(follower.since(), 25, deltas=not whole, epoch=follower.epoch)
        if update is None:
            continue
        options = PlanOptions(now=time.time())
        if not follower.take_update(update, options):
            continue
        follower.plan(options)
        done = time.monotonic()
        task = follower.task(victim_id)
        kind = "whole" if update.cluster is not None else "delta"
        print(f"took {update.version} {done:.6f} {kind} {task.health if task else '-'}", flush=True)


def main(argv: list[str]) -> int:
    if argv[0] == "controller":
        run_controller(int(argv[1]), argv[2])
    else:
        run_agent(argv[1], argv[2], "--whole" in argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
