"""One benchmark measurement per process: `workers.py {ingressmesh|kubeproxy} --services N ...`.

Why a separate process per size and per variant: peak RSS (`ru_maxrss`) only ever grows, so
the only way to get the peak of "the agent at N services" is a fresh interpreter for each N.
The worker prints one JSON object on stdout; control_plane.py runs it and owns the namespace.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from ingressmesh.incremental import IncrementalPlanner
from ingressmesh.netns import Netns
from ingressmesh.nft.backend import NftBackend
from ingressmesh.nft.kernel import KernelNft
from ingressmesh.plan import NamespacePlan, plan_node

import kubeproxy_style as kp
import synthetic

LB_KEY = "lb:" + synthetic.NETWORK_ID
GNU_TIME = "/usr/bin/time"


@dataclass(frozen=True)
class PeakRssNetns(Netns):
    """A Netns whose commands run under GNU time, which writes the child's peak RSS to `report`.

    Why not RUSAGE_CHILDREN alone: a child spawned by Python (vfork or fork, then exec) is
    charged the parent's resident set at exec time, so RUSAGE_CHILDREN.ru_maxrss of a 150 MB
    agent says "150 MB" even for `true`.  GNU time is a tiny parent, so its %M is nft's own peak.
    """
    report: str = ""

    def command(self, argv):
        return [GNU_TIME, "-f", "%M", "-o", self.report, *super().command(argv)]


def _measured_netns(path: str) -> tuple[Netns, Optional[str]]:
    """(netns to use for the cold load, file GNU time reports to), or the plain netns."""
    if not os.access(GNU_TIME, os.X_OK):
        return Netns(path), None
    handle, report = tempfile.mkstemp(prefix="imbench-rss-")
    os.close(handle)
    return PeakRssNetns(path, report), report


def _read_peak_mb(report: Optional[str]) -> Optional[float]:
    if report is None:
        return None
    try:
        with open(report, encoding="ascii") as handle:
            lines = handle.read().split()
        return round(int(lines[-1]) / 1024, 1) if lines else None
    except (OSError, ValueError):
        return None
    finally:
        os.unlink(report)


def _rss_mb(who: int) -> float:
    """Peak RSS in MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _summary(samples: list[float]) -> dict:
    return {"median_ms": round(statistics.median(samples), 2), "max_ms": round(max(samples), 2),
            "min_ms": round(min(samples), 2), "samples_ms": [round(s, 2) for s in samples]}


class TimedRunner:
    """Wraps KernelNft so the time spent in the nft and conntrack children is known apart."""

    def __init__(self, inner: KernelNft):
        self.inner = inner
        self.nft_s = 0.0
        self.forget_s = 0.0

    def run_script(self, script: str) -> None:
        started = time.perf_counter()
        try:
            self.inner.run_script(script)
        finally:
            self.nft_s += time.perf_counter() - started

    def list_table(self):
        return self.inner.list_table()

    def forget_connections(self, addresses: frozenset) -> None:
        started = time.perf_counter()
        try:
            self.inner.forget_connections(addresses)
        finally:
            self.forget_s += time.perf_counter() - started


def _lb_plan(cluster) -> NamespacePlan:
    plan = plan_node(cluster, synthetic.LOCAL_NODE)
    lb = plan.namespace(LB_KEY)
    if lb is None:
        raise RuntimeError(f"no {LB_KEY} namespace in the plan; warnings: {plan.warnings}")
    return lb


def _timed(runner: TimedRunner, plan_call, backend: NftBackend) -> dict:
    """Time one sync: `plan_call()` gives the lb NamespacePlan, the backend applies it."""
    runner.nft_s = runner.forget_s = 0.0
    started = time.perf_counter()
    lb = plan_call()
    planned = time.perf_counter()
    tx = backend.apply(lb)
    done = time.perf_counter()
    return {"total_ms": _ms(done - started), "plan_ms": _ms(planned - started),
            "apply_ms": _ms(done - planned), "nft_ms": _ms(runner.nft_s),
            "conntrack_ms": _ms(runner.forget_s),
            "python_ms": _ms(done - started - runner.nft_s - runner.forget_s),
            "full": bool(tx and tx.full), "added": tx.added if tx else 0,
            "removed": tx.removed if tx else 0, "script_bytes": len(tx.script) if tx else 0}


def _sync(backend: NftBackend, runner: TimedRunner, cluster) -> dict:
    """The stateless path (`ingressmesh apply`): re-plan the whole cluster, then apply."""
    return _timed(runner, lambda: _lb_plan(cluster), backend)


def _incremental_lb(planner: IncrementalPlanner) -> NamespacePlan:
    return planner.plan().namespace(LB_KEY)


def _profile(call, top: int = 18) -> dict:
    """Run `call` under cProfile: the hottest functions, and own time summed per source file."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(call)
    wall = time.perf_counter() - started
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    per_file: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, _) in stats.stats.items():
        key = filename.split("/ingressmesh/")[-1] if "/ingressmesh/" in filename else os.path.basename(filename)
        per_file[key] = per_file.get(key, 0.0) + own
    hottest = sorted(per_file.items(), key=lambda kv: -kv[1])[:12]
    return {"wall_ms": _ms(wall), "own_ms_by_file": {k: _ms(v) for k, v in hottest},
            "top_by_tottime": text.getvalue().splitlines()[-(top + 3):]}


def _element_present(netns: Netns, vip: str) -> bool:
    proc = netns.run(["nft", "get", "element", "ip", "ingressmesh", "vip_services", f"{{ {vip} }}"],
                     check=False)
    return proc.returncode == 0


def run_ingressmesh(args) -> dict:
    """Cold full sync, then `changes` x (add one endpoint, remove it) through the diff path."""
    rss_start = _rss_mb(resource.RUSAGE_SELF)
    cluster = synthetic.build_cluster(args.services, args.endpoints)
    rss_model = _rss_mb(resource.RUSAGE_SELF)
    netns = Netns(args.netns_path)
    measured, report = _measured_netns(args.netns_path)
    runner = TimedRunner(KernelNft(measured))
    backend = NftBackend(runner)
    planners = []  # the agent's path: one IncrementalPlanner, built as part of the cold sync

    def cold_plan() -> NamespacePlan:
        planners.append(IncrementalPlanner(cluster, synthetic.LOCAL_NODE))
        return _incremental_lb(planners[0])
    cold = _timed(runner, cold_plan, backend)
    planner = planners[0]
    runner.inner = KernelNft(netns)  # changes run exactly as the agent runs them
    cold["elements"] = len(backend.applied.elements)
    cold["chains"] = len(backend.applied.chains)
    result = {"cold": cold, "rss_mb": {"interpreter": rss_start, "after_model": rss_model,
                                       "after_cold": _rss_mb(resource.RUSAGE_SELF)},
              "nft_peak_rss_mb_cold": _read_peak_mb(report)}
    result["cold_verified"] = _element_present(netns, _incremental_lb(planner).vips[-1].vip)
    # One change at a time fed to the planner, then the same backend (diff path).
    samples = {"add_endpoint": ([], []), "remove_endpoint": ([], [])}
    for i in range(args.changes):
        spare = synthetic.spare_task((i * 7919) % args.services, i)
        planner.set_task(spare)
        add = _timed(runner, lambda: _incremental_lb(planner), backend)
        planner.remove_task(spare.id)
        remove = _timed(runner, lambda: _incremental_lb(planner), backend)
        if add["added"] < 1 or remove["removed"] < 1:
            raise RuntimeError(f"change {i} did not reach the kernel: {add} {remove}")
        for kind, sample in (("add_endpoint", add), ("remove_endpoint", remove)):
            samples[kind][0].append(sample["total_ms"])
            samples[kind][1].append(sample["nft_ms"] + sample["conntrack_ms"])
    for kind, (totals, kernel) in samples.items():
        if totals:
            result[kind] = {**_summary(totals), "nft_median_ms": round(statistics.median(kernel), 2)}
    # The agent's peak: everything above is what a running agent holds and does.
    result["rss_mb"]["peak_agent"] = _rss_mb(resource.RUSAGE_SELF)
    # The stateless path (`ingressmesh apply`, or an agent without the incremental planner):
    # the whole cluster re-planned for each change.  Fewer repetitions: each costs ~1 s at 10k.
    full_samples = {"add_endpoint_full_replan": [], "remove_endpoint_full_replan": []}
    for i in range(min(args.changes, 5)):
        grown = synthetic.with_task(cluster, synthetic.spare_task((i * 104729) % args.services, 100 + i))
        full_samples["add_endpoint_full_replan"].append(_sync(backend, runner, grown)["total_ms"])
        full_samples["remove_endpoint_full_replan"].append(_sync(backend, runner, cluster)["total_ms"])
    for kind, totals in full_samples.items():
        if totals:
            result[kind] = _summary(totals)
    result["rss_mb"]["peak"] = _rss_mb(resource.RUSAGE_SELF)
    result["rusage_children_maxrss_mb"] = _rss_mb(resource.RUSAGE_CHILDREN)  # upper bound, see above
    if args.profile:
        spare = synthetic.spare_task(0, args.changes + 1)

        def one_change():
            planner.set_task(spare)
            backend.apply(_incremental_lb(planner))
        result["profile_one_change"] = _profile(one_change)
        # A second backend has no memory of the table, so its first apply is a full rebuild:
        # the same work as the cold sync (plus replacing the existing table), now under cProfile.
        # (Done last: it replaces the table the first backend remembers.)
        restart = NftBackend(TimedRunner(KernelNft(netns)))
        result["profile_full_sync"] = _profile(lambda: restart.apply(_lb_plan(cluster)))
    return result


def _kp_apply(netns: Netns, script: str, timeout: float) -> float:
    """One `nft -f -` in its own process group, so a timeout kills nft itself, not just its parent
    (under GNU time the direct child is `time`, and killing only it would orphan nft)."""
    started = time.perf_counter()
    proc = subprocess.Popen(netns.command(["nft", "-f", "-"]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(script, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"kube-proxy-style transaction refused: {stderr.strip()[:500]}")
    return time.perf_counter() - started


def run_kubeproxy(args) -> dict:
    """Cold load of the chain-per-service/endpoint ruleset, then `changes` endpoint add/removes."""
    rss_start = _rss_mb(resource.RUSAGE_SELF)
    cluster = synthetic.build_cluster(args.services, args.endpoints)
    netns = Netns(args.netns_path)
    started = time.perf_counter()
    services = kp.services_from_plan(_lb_plan(cluster))
    script = kp.full_script(services)
    rendered = time.perf_counter()
    cold = {"python_ms": _ms(rendered - started), "script_bytes": len(script),
            "chains": len(services) + sum(len(s.endpoints) for s in services)}
    result = {"cold": cold}
    measured, report = _measured_netns(args.netns_path)
    try:
        nft_s = _kp_apply(measured, script, args.timeout)
    except subprocess.TimeoutExpired:
        cold.update(status="timeout", timeout_s=args.timeout)
        _read_peak_mb(report)
        return result
    cold.update(status="ok", nft_ms=_ms(nft_s), total_ms=_ms(rendered - started + nft_s))
    result["nft_peak_rss_mb_cold"] = _read_peak_mb(report)
    adds, removes = [], []
    for i in range(args.changes):
        service = services[(i * 7919) % len(services)]
        # Timed: rendering the change plus its transaction (kube-proxy tracks changes
        # incrementally, so no full re-plan is charged to it).
        started = time.perf_counter()
        add_script, grown = kp.add_endpoint_script(service, synthetic.spare_task(0, i).addresses[0].address)
        _kp_apply(netns, add_script, args.timeout)
        adds.append(time.perf_counter() - started)
        started = time.perf_counter()
        remove_script, _ = kp.remove_endpoint_script(grown)
        _kp_apply(netns, remove_script, args.timeout)
        removes.append(time.perf_counter() - started)
    if args.changes:
        result["add_endpoint"] = _summary([s * 1000 for s in adds])
        result["remove_endpoint"] = _summary([s * 1000 for s in removes])
    result["rss_mb"] = {"interpreter": rss_start, "peak": _rss_mb(resource.RUSAGE_SELF)}
    result["rusage_children_maxrss_mb"] = _rss_mb(resource.RUSAGE_CHILDREN)  # upper bound
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("variant", choices=("ingressmesh", "kubeproxy"))
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--netns-path", required=True)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600.0, help="kube-proxy-style nft load cap (s)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    run = run_ingressmesh if args.variant == "ingressmesh" else run_kubeproxy
    json.dump(run(args), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
