"""What the VIP fast path costs at scale: one table per container, each holding its networks' VIPs.

A node with N containers (network namespaces made here) on one overlay holding S services x E
tasks, programmed by the agent's own FastPath (agent/fast_path.py: plan_containers, the
nftables backend writing through libnftables in-process, own-rules checks and all).  Measured:
- *new container*: containers arrive one at a time (a start event = the container list
  changes, then the fast path's sync), the time from the event to its table being committed;
- *one change*: a task turning unhealthy (an IncrementalPlanner change, as the agent's main
  loop hands it over), from `plan_changed` to the change committed in every namespace, and
  the agent's CPU (user + system of this process and its children) for it;
- elements per container in the kernel, and the kernel's slab memory for all the tables.
Needs root.  `--legacy` measures the earlier writer (one `nft -f` process per namespace).

    sudo .venv/bin/python bench/fast_path_fanout.py [--containers 100] [--services 1000] [--endpoints 10]
    sudo .venv/bin/python bench/fast_path_fanout.py --quick          # 20 x 1,000 x 10, ~20 s
Results: bench/results/fast_path_fanout[-<label>].json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import synthetic  # noqa: E402  (bench/ is not a package)
from ingressmesh.agent.docker_layout import DockerNamespaces  # noqa: E402
from ingressmesh.agent.fast_path import FastPath  # noqa: E402
from ingressmesh.dataplane.apply import kernel_nft_backend  # noqa: E402
from ingressmesh.incremental import IncrementalPlanner  # noqa: E402
from ingressmesh.plan import PlanOptions  # noqa: E402
from ingressmesh.swarm.local_containers import ContainerFacts  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GOALS = {"one_change_fanout_ms": 100.0, "new_container_ms": 50.0, "agent_cpu_ms_per_change": 50.0}


class Containers:
    """LocalContainers as FastPath reads it: the namespaces this run made."""

    def __init__(self):
        self.facts: tuple = ()
        self.last_error = ""

    def current(self):
        return self.facts


def _slab_kb() -> int:
    for line in open("/proc/meminfo", encoding="ascii"):
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in usage)


def _pct(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(containers: int, services: int, endpoints: int, changes: int, legacy: bool) -> dict:
    prefix = "imfo" + secrets.token_hex(2)
    names = [f"{prefix}-{i}" for i in range(containers)]
    started_at = time.monotonic()
    cluster = synthetic.build_cluster(services, endpoints)
    planner = IncrementalPlanner(cluster, synthetic.LOCAL_NODE, PlanOptions(now=1000.0))
    local = Containers()
    fast = FastPath(DockerNamespaces(exec_root="/run"), local, kernel_nft_backend if legacy else None)
    fast.plan_changed(planner.plan())
    slab_before = _slab_kb()
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        first = []
        for i, name in enumerate(names):  # containers arriving one by one: each new one programmed
            local.facts += (ContainerFacts(f"c{i:04d}", name, (synthetic.NETWORK_ID,), name),)
            begun = time.perf_counter()
            fast.sync()
            first.append((time.perf_counter() - begun) * 1000)
            if fast.errors:
                raise RuntimeError(fast.errors)
        loaded_s = time.monotonic() - started_at
        slab_after = _slab_kb()
        fanouts, cpu = [], []
        victims = list(cluster.tasks)[:changes]
        for n, victim in enumerate(victims):
            planner.set_task(dataclasses.replace(victim, health="unhealthy", since=1000.0 + n))
            planner.set_options(PlanOptions(now=1000.0 + n))
            cpu_before, begun = _cpu(), time.perf_counter()
            fast.plan_changed(planner.plan())
            fast.sync(recheck=False)  # as the thread does when woken by a new plan
            fanouts.append((time.perf_counter() - begun) * 1000)
            cpu.append((_cpu() - cpu_before) * 1000)
            if fast.errors:
                raise RuntimeError(fast.errors)
        listed = subprocess.run(["ip", "netns", "exec", names[-1], "nft", "-j", "list", "map", "ip", "ingressmesh",
                                 "vip_backends"], capture_output=True, text=True, timeout=300).stdout
        per_ns = next((len(o["map"].get("elem", [])) for o in json.loads(listed)["nftables"] if "map" in o), 0)
        tables = {subprocess.run(["ip", "netns", "exec", n, "nft", "list", "table", "ip", "ingressmesh"],
                                 capture_output=True, text=True, timeout=300).stdout for n in (names[0], names[-1])}
    finally:
        local.facts = ()
        fast.sync()  # every table removed, as when the containers stop
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)
    return {"writer": "nft -f per namespace" if legacy else "libnftables in-process",
            "workers": fast.applier.workers,
            "containers": containers, "services": services, "endpoints": endpoints,
            "new_container_ms": {"median": round(statistics.median(first), 1), "p90": round(_pct(first, 0.9), 1),
                                 "max": round(max(first), 1), "all": [round(x, 1) for x in first]},
            "one_change_fanout_ms": {"median": round(statistics.median(fanouts), 1), "max": round(max(fanouts), 1),
                                     "all": [round(x, 1) for x in fanouts]},
            "one_change_per_container_ms": round(statistics.median(fanouts) / containers, 3),
            "agent_cpu_ms_per_change": {"median": round(statistics.median(cpu), 1), "all": [round(x, 1) for x in cpu]},
            "vip_backend_elements_per_container": per_ns,
            "first_and_last_container_tables_identical": len(tables) == 1,
            "kernel_slab_mb": round((slab_after - slab_before) / 1024, 1),
            "kernel_slab_mb_per_container": round((slab_after - slab_before) / 1024 / containers, 2),
            "seconds_to_load_all": round(loaded_s, 1)}


def verdicts(result: dict) -> dict:
    measured = {"one_change_fanout_ms": result["one_change_fanout_ms"]["median"],
                "new_container_ms": result["new_container_ms"]["median"],
                "agent_cpu_ms_per_change": result["agent_cpu_ms_per_change"]["median"]}
    return {k: {"measured": v, "goal_below": GOALS[k], "met": v < GOALS[k]} for k, v in measured.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--changes", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="20 containers, 3 changes")
    parser.add_argument("--legacy", action="store_true", help="the earlier writer: `nft -f` per namespace")
    parser.add_argument("--label", default="", help="results go to fast_path_fanout-<label>.json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces, nftables)")
    if args.quick:
        args.containers, args.changes = 20, 3
    # SIGTERM (a `timeout`, Ctrl-C's cousin) unwinds through run()'s finally: namespaces deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"stopped by SIGTERM"))
    if not (1 <= args.containers <= 500 and 1 <= args.services <= 10000 and 1 <= args.endpoints <= 50
            and 1 <= args.changes <= 50):
        parser.error("--containers 1..500, --services 1..10000, --endpoints 1..50, --changes 1..50")
    result = run(args.containers, args.services, args.endpoints, args.changes, args.legacy)
    result["goals"] = verdicts(result)
    result["machine"] = {"nproc": os.cpu_count(), "kernel": os.uname().release}
    marks = {k: ("met" if v["met"] else "NOT MET") for k, v in result["goals"].items()}
    print(f"fast path ({result['writer']}, {result['workers']} threads) at {args.containers} containers x {args.services} services x "
          f"{args.endpoints} tasks: new container programmed in {result['new_container_ms']['median']} ms median "
          f"(p90 {result['new_container_ms']['p90']}, max {result['new_container_ms']['max']}; goal < 50: "
          f"{marks['new_container_ms']}); one endpoint change in every container "
          f"{result['one_change_fanout_ms']['median']} ms (max {result['one_change_fanout_ms']['max']}; goal < 100: "
          f"{marks['one_change_fanout_ms']}); agent CPU {result['agent_cpu_ms_per_change']['median']} ms per change "
          f"(goal < 50: {marks['agent_cpu_ms_per_change']}); {result['vip_backend_elements_per_container']} backend "
          f"elements per container; kernel slab +{result['kernel_slab_mb']} MB "
          f"({result['kernel_slab_mb_per_container']} MB per container); all loaded in "
          f"{result['seconds_to_load_all']} s")
    os.makedirs(RESULTS, exist_ok=True)
    name = f"fast_path_fanout-{args.label}.json" if args.label else "fast_path_fanout.json"
    with open(os.path.join(RESULTS, name), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
