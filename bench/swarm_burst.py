"""A burst of services on the real swarm lab: how soon every node routes every new VIP.

A 3-node lab of its own (prefix `imbench`, 10.75.0.0/24, /var/lib/ingressmesh/lab-bench) with
the controller and an agent per node; N services (default 200, one busybox task each) created
at once on one overlay network by 8 API clients.  For each node: when its LB namespace has a
backend element for every new task (`vip_backends`, the task id in the element's comment), to
the time the last task turned running (Docker's own task timestamps, same host clock).  Also
`ingressmesh show` on node1 (it must list every service), and the CPU the controller and the
agents used during the burst and at idle afterwards (`/proc/<pid>/stat`, % of one core).

    sudo .venv/bin/python bench/swarm_burst.py [--services 200] [--idle 30] [--keep]
Results: bench/results/swarm_burst.json.  Needs root (the lab); traffic: none.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ingressmesh.lab import BUSYBOX_IMAGE, Lab, LabConfig  # noqa: E402
from ingressmesh.testbed.swarm_mesh import SwarmMesh  # noqa: E402
from ingressmesh.testbed.swarm_probe import kernel_map  # noqa: E402

CONFIG = LabConfig(lab_dir="/var/lib/ingressmesh/lab-bench", prefix="imbench", subnet="10.75.0",
                   pool="10.203.0.0/16", nodes=3, managers=1)
NETWORK, SUBNET = "burst", "10.204.0.0/21"  # room for 2 x 1,000 addresses (VIPs and tasks)
GOAL_S = 2.0
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "swarm_burst.json")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """utime + stime of each process (its threads included)."""
    found = {}
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            found[name] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        except OSError:
            found[name] = float("nan")
    return found


def cpu_percent(before: dict, after: dict, seconds: float) -> dict[str, float]:
    return {name: round(100 * (after[name] - before[name]) / seconds, 1) for name in before}


def docker_time(stamp: str) -> float:
    """Docker's RFC 3339 timestamp (nanoseconds) as a Unix time."""
    head, _, rest = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (rest or "0")[:6])


def create_all(lab: Lab, count: int) -> list[str]:
    """`count` services created at once by 8 API clients; their ids."""
    clients = [lab.docker_client(1) for _ in range(8)]

    def create(i: int) -> str:
        api = clients[i % len(clients)].api
        spec = {"ContainerSpec": {"Image": BUSYBOX_IMAGE}, "Networks": [{"Target": NETWORK}]}
        return api.create_service(spec, name=f"burst{i:04d}")["ID"]
    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            return list(pool.map(create, range(count)))
    finally:
        for client in clients:
            client.close()


def running_tasks(lab: Lab, services: set[str]) -> dict[str, float]:
    """task id -> the Unix time it turned running, for the burst's running tasks."""
    client = lab.docker_client(1)
    try:
        tasks = client.api.tasks(filters={"desired-state": "running"})
    finally:
        client.close()
    return {t["ID"]: docker_time(t["Status"]["Timestamp"]) for t in tasks
            if t["ServiceID"] in services and t["Status"]["State"] == "running"}


def routed_tasks(lab: Lab, n: int, network_id: str, task_ids: set[str]) -> int:
    """How many of the tasks node n's LB namespace for the network has a backend element for."""
    text = kernel_map(f"{lab.netns_dir(n)}/lb_{network_id[:9]}", "vip_backends")
    return sum(1 for task_id in task_ids if f' {task_id}"' in text)


def run(args) -> dict:
    lab = Lab(CONFIG, log=lambda msg: print(f"  lab: {msg}"))
    lab.down(grace=0)
    lab.up()
    mesh = SwarmMesh(lab)
    try:
        lab.docker(1, "network", "create", "--driver", "overlay", "--attachable", "--subnet", SUBNET, NETWORK)
        network_id = lab.docker(1, "network", "inspect", "-f", "{{.ID}}", NETWORK).stdout.strip()
        mesh.up(timeout=60)
        pids = {name: pid for name, pid in mesh.recorded_alive().items()}
        time.sleep(5)
        idle_before = cpu_seconds(pids)
        time.sleep(args.idle)
        before_pct = cpu_percent(idle_before, cpu_seconds(pids), args.idle)

        burst_cpu, started = cpu_seconds(pids), time.time()
        services = set(create_all(lab, args.services))
        created = time.time()
        print(f"{args.services} services created in {created - started:.1f} s")
        routed_at: dict[int, float] = {}
        running: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and len(routed_at) < len(CONFIG.node_numbers):
            running = running_tasks(lab, services)
            if len(running) == args.services:
                for n in CONFIG.node_numbers:
                    if n not in routed_at and routed_tasks(lab, n, network_id, set(running)) == args.services:
                        routed_at[n] = time.time()
            time.sleep(0.2)
        if len(routed_at) < len(CONFIG.node_numbers):
            raise RuntimeError(f"not every node routed every task within {args.timeout} s: "
                               f"{len(running)} running, routed at {routed_at}")
        burst_s = max(routed_at.values()) - started
        during_pct = cpu_percent(burst_cpu, cpu_seconds(pids), burst_s)
        last_running = max(running.values())
        after_last = {f"node{n}": round(t - last_running, 2) for n, t in sorted(routed_at.items())}

        show = subprocess.run([sys.executable, "-m", "ingressmesh.lab", "show", "--lab-dir", CONFIG.lab_dir, "1"],
                              capture_output=True, text=True, timeout=120)
        listed = {f"burst{i:04d}" for i in range(args.services) if f"burst{i:04d}" in show.stdout}

        idle_after = cpu_seconds(pids)
        time.sleep(args.idle)
        after_pct = cpu_percent(idle_after, cpu_seconds(pids), args.idle)
        return {"services": args.services, "nodes": len(CONFIG.node_numbers),
                "create_s": round(created - started, 2),
                "first_to_last_running_s": round(last_running - min(running.values()), 2),
                "routed_after_last_running_s": after_last,
                "goal_s": GOAL_S, "goal_met": all(v <= GOAL_S for v in after_last.values()),
                "burst_s": round(burst_s, 2), "show_lists": len(listed),
                "cpu_percent_of_one_core": {"idle_before": before_pct, "during_burst": during_pct,
                                            "idle_after": after_pct},
                "machine": {"cores": os.cpu_count(), "kernel": os.uname().release}}
    finally:
        if not args.keep:
            mesh.down()
            mesh.remove_files()
            lab.down()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measured before and after")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="leave the lab and the mesh up afterwards")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("needs root (a lab of network namespaces and dockerds)")
    result = run(args)
    print(f"{result['services']} services in a burst on one overlay, {result['nodes']} nodes: created in "
          f"{result['create_s']} s, tasks running over {result['first_to_last_running_s']} s")
    for node, delay in result["routed_after_last_running_s"].items():
        print(f"  {node}: every task routed {delay:+.2f} s after the last one turned running "
              f"(goal <= {GOAL_S:g} s: {'met' if delay <= GOAL_S else 'NOT met'})")
    print(f"  `ingressmesh show` on node1 lists {result['show_lists']} of {result['services']} services")
    for phase, values in result["cpu_percent_of_one_core"].items():
        print(f"  CPU % of one core, {phase}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
