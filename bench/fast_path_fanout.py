"""What the VIP fast path costs at scale: one table per container, each holding its networks' VIPs.

A node with N containers (network namespaces made here) on one overlay holding S services x E
tasks: the agent's own code (plan_containers + NodeApplier with the nftables backend) programs
every container namespace, then one endpoint change (a task turning unhealthy) is fanned out to
all of them, as the agent's fast-path thread does.  Measured: the time to program one new
container, the fan-out of one change (all namespaces together), elements in the kernel, the
kernel's slab memory, and the agent-side CPU time.  Needs root.

    sudo .venv/bin/python bench/fast_path_fanout.py [--containers 100] [--services 1000] [--endpoints 10]
Results: bench/results/fast_path_fanout.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import synthetic  # noqa: E402  (bench/ is not a package)
from ingressmesh.dataplane.apply import NodeApplier  # noqa: E402
from ingressmesh.dataplane.layout import Layout  # noqa: E402
from ingressmesh.incremental import IncrementalPlanner  # noqa: E402
from ingressmesh.plan import NodePlan, PlanOptions  # noqa: E402
from ingressmesh.plan_containers import LocalContainer, plan_containers  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GOAL_MS = 50.0


def _slab_kb() -> int:
    for line in open("/proc/meminfo", encoding="ascii"):
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _containers_only(plan: NodePlan) -> NodePlan:
    return NodePlan(node_id=plan.node_id, namespaces=tuple(ns for ns in plan.namespaces if ns.role == "container"))


def run(containers: int, services: int, endpoints: int) -> dict:
    prefix = "imfo" + secrets.token_hex(2)
    names = [f"{prefix}-{i}" for i in range(containers)]
    cluster = synthetic.build_cluster(services, endpoints)
    planner = IncrementalPlanner(cluster, synthetic.LOCAL_NODE, PlanOptions(now=1000.0))
    locals_ = [LocalContainer(f"c{i}", names[i], (synthetic.NETWORK_ID,)) for i in range(containers)]
    applier = NodeApplier(Layout(containers={f"c{i}": f"/run/netns/{names[i]}" for i in range(containers)}))
    slab_before = _slab_kb()
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        first = []
        for i in range(containers):  # containers arriving one by one: each new one programmed
            plan = _containers_only(plan_containers(planner.plan(), locals_[: i + 1]))
            started = time.perf_counter()
            report = applier.apply(plan)
            first.append((time.perf_counter() - started) * 1000)
            if not report.ok:
                raise RuntimeError(report.errors)
        slab_after = _slab_kb()
        fanouts, cpu = [], []
        victims = [t for t in cluster.tasks][:5]
        for n, victim in enumerate(victims):
            planner.set_task(dataclasses.replace(victim, health="unhealthy", since=1000.0 + n))
            planner.set_options(PlanOptions(now=1000.0 + n))
            plan = _containers_only(plan_containers(planner.plan(), locals_))
            cpu_before, started = _cpu(), time.perf_counter()
            report = applier.apply(plan)
            fanouts.append((time.perf_counter() - started) * 1000)
            cpu.append((_cpu() - cpu_before) * 1000)
            if not report.ok:
                raise RuntimeError(report.errors)
        listed = subprocess.run(["ip", "netns", "exec", names[0], "nft", "-j", "list", "map", "ip", "ingressmesh",
                                 "vip_backends"], capture_output=True, text=True, timeout=120).stdout
        per_ns = next((len(o["map"].get("elem", [])) for o in json.loads(listed)["nftables"] if "map" in o), 0)
    finally:
        applier.apply(NodePlan(node_id="x", namespaces=()))
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)
    fanout = statistics.median(fanouts)
    return {"containers": containers, "services": services, "endpoints": endpoints,
            "new_container_ms": {"median": round(statistics.median(first), 1), "max": round(max(first), 1)},
            "one_change_fanout_ms": {"median": round(fanout, 1), "all": [round(x, 1) for x in fanouts]},
            "one_change_per_container_ms": round(fanout / containers, 2),
            "agent_cpu_ms_per_change": round(statistics.median(cpu), 1),
            "vip_backend_elements_per_container": per_ns,
            "kernel_slab_mb": round((slab_after - slab_before) / 1024, 1),
            "containers_within_goal": int(GOAL_MS // (fanout / containers)) if fanout else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, nftables)")
    if not (1 <= args.containers <= 500 and 1 <= args.services <= 10000 and 1 <= args.endpoints <= 50):
        parser.error("--containers 1..500, --services 1..10000, --endpoints 1..50")
    result = run(args.containers, args.services, args.endpoints)
    verdict = "met" if result["one_change_fanout_ms"]["median"] < GOAL_MS else "NOT MET"
    print(f"fast path at {args.containers} containers x {args.services} services x {args.endpoints} tasks: "
          f"a new container programmed in {result['new_container_ms']['median']} ms (max "
          f"{result['new_container_ms']['max']}); one endpoint change to every container "
          f"{result['one_change_fanout_ms']['median']} ms ({result['one_change_per_container_ms']} ms each; "
          f"goal < {GOAL_MS:.0f} ms for all: {verdict}; within the goal up to {result['containers_within_goal']} "
          f"containers); agent CPU {result['agent_cpu_ms_per_change']} ms per change; "
          f"{result['vip_backend_elements_per_container']} backend elements per container; kernel slab "
          f"+{result['kernel_slab_mb']} MB")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "fast_path_fanout.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
