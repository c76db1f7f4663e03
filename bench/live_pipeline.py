"""What one health change costs on the live controller → agent path, as the swarm grows.

Two measurements per size (N services × 10 tasks, three nodes):
  stages  in one process, each stage of the delta path for one health change: the controller's
          incremental merge, the delta into the store and its encoding; the agent's parse,
          apply and plan.  The whole-snapshot path (what every change cost before deltas: the
          whole merge, then the agent parsing and diffing the whole snapshot) is timed in the
          same run as the baseline.
  live    two real processes over HTTP on loopback (bench/live_roles.py): the controller (its
          own Controller, HTTP API and 1 s tick) and an agent following by deltas.  A node
          report flips one task's health; the time from posting it to the agent having its new
          plan is the latency (median and max of several).  The same is measured for an agent
          following whole snapshots.  Controller and agent CPU at idle (heartbeats from three
          nodes every 5 s, the tick) and their RSS are read from /proc.
Goals (issue: performance at scale): one change < 50 ms at 10,000 services; controller idle
CPU < 5 % of a core; controller and agent RSS < 300 MB each.

    .venv/bin/python bench/live_pipeline.py [--sizes 100,1000,10000] [--changes 7] [--idle 10]
Results: bench/results/live_pipeline.{json,txt}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import live_processes  # noqa: E402  (bench/ is not a package)
import live_roles  # noqa: E402
from ingressmesh.agent.cluster_follower import ClusterFollower  # noqa: E402
from ingressmesh.agent.controller_client import Update  # noqa: E402
from ingressmesh.controller.app import _as_delta  # noqa: E402
from ingressmesh.controller.live_merge import LiveMerge  # noqa: E402
from ingressmesh.controller.merge import merge  # noqa: E402
from ingressmesh.controller.store import SnapshotStore  # noqa: E402
from ingressmesh.plan import PlanOptions  # noqa: E402
from ingressmesh.snapshot import FORMAT_VERSION, to_dict  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GOAL_MS, GOAL_CPU, GOAL_RSS_MB = 50.0, 5.0, 300.0


def _timed(func):
    started = time.perf_counter()
    value = func()
    return value, (time.perf_counter() - started) * 1000


def _reports(state, health: dict) -> dict:
    return {n: live_roles.node_report(state, n, health) for n in live_roles.NODE_IDS}


def measure_stages(services: int) -> dict:
    state = live_roles.synthetic_state(services)
    reports = _reports(state, {})
    live, store = LiveMerge(), SnapshotStore()
    store.publish_delta(_as_delta(live.update(state, reports, 1000.0)))
    follower = ClusterFollower(live_roles.synthetic.LOCAL_NODE)
    before = store.version
    before_text = store.encoded(before)
    follower.take_update(Update(before, cluster=json.loads(before_text)["cluster"], epoch=store.epoch),
                         PlanOptions(now=1000.0))
    follower.plan(PlanOptions(now=1000.0))  # as the agent did when it took the whole snapshot
    victim = live_roles.victim(state)
    reports = dict(reports)
    reports[victim.node_id] = live_roles.node_report(state, victim.node_id, {victim.id: "unhealthy"})
    changes, merge_ms = _timed(lambda: live.update(state, reports, 1001.0))
    version, store_ms = _timed(lambda: store.publish_delta(_as_delta(changes)))
    body, encode_ms = _timed(lambda: store.encoded_delta(before, version))
    received, parse_ms = _timed(lambda: json.loads(body))
    options = PlanOptions(now=1001.0)
    update = Update(received["version"], delta=received["delta"], since=received["since"], epoch=received["epoch"])
    taken, apply_ms = _timed(lambda: follower.take_update(update, options))
    assert taken, "the delta should apply"
    plan, plan_ms = _timed(lambda: follower.plan(options))
    assert follower.task(victim.id).health == "unhealthy" and follower.full_syncs == 1
    # The baseline in the same run: the whole-snapshot path for the same change.
    whole, whole_merge_ms = _timed(lambda: merge(state, reports, live.tracker, 1001.0))
    data, whole_encode_ms = _timed(lambda: json.dumps({**to_dict(whole.cluster), "version": FORMAT_VERSION}))
    old_agent = ClusterFollower(live_roles.synthetic.LOCAL_NODE)
    old_agent.take(json.loads(before_text)["cluster"], options)
    old_agent.plan(options)
    _, whole_agent_ms = _timed(lambda: (old_agent.take(json.loads(data), options), old_agent.plan(options)))
    controller_ms = merge_ms + store_ms + encode_ms
    agent_ms = parse_ms + apply_ms + plan_ms
    whole_ms = whole_merge_ms + whole_encode_ms + whole_agent_ms
    return {"services": services, "tasks": len(state.tasks), "delta_bytes": len(body), "whole_mb": round(len(data) / 1e6, 2),
            "controller_ms": {"merge": merge_ms, "store": store_ms, "encode": encode_ms, "total": controller_ms},
            "agent_ms": {"parse": parse_ms, "apply": apply_ms, "plan": plan_ms, "total": agent_ms},
            "delta_path_ms": controller_ms + agent_ms,
            "whole_path_ms": {"merge": whole_merge_ms, "encode": whole_encode_ms, "agent": whole_agent_ms,
                              "total": whole_ms}}


def render(results: list[dict]) -> str:
    lines = ["One health change, controller -> agent, N services x 10 tasks on 30 nodes (delta path; "
             "whole-snapshot path as the baseline in the same run)",
             f"{'services':>9} {'stages':>8} {'(whole)':>9} {'live p50':>9} {'max':>7} {'(whole)':>9} "
             f"{'ctl idle':>9} {'agent idle':>10} {'ctl RSS':>8} {'agent RSS':>9}"]
    for r in results:
        s, live = r["stages"], r.get("live") or {}
        delta, whole = live.get("delta") or {}, live.get("whole") or {}
        lines.append(
            f"{r['services']:>9} {s['delta_path_ms']:>6.1f}ms {s['whole_path_ms']['total']:>7.0f}ms "
            f"{_ms(delta.get('p50_ms'))} {_ms(delta.get('max_ms'), 5)} {_ms(whole.get('p50_ms'), 7)} "
            f"{_pct(live.get('controller_idle_cpu_pct'), 8)} {_pct(live.get('agent_idle_cpu_pct'), 9)} "
            f"{_mb(live.get('controller_rss_mb'), 6)} {_mb(live.get('agent_rss_mb'), 7)}")
    lines += ["stages = in one process: incremental merge + delta into the store + encode, then parse + apply + plan",
              "live = two processes over HTTP: report posted -> the agent has its new plan (p50 and max); "
              "idle CPU = % of one core with heartbeats and the 1 s tick", "Goals: " + "; ".join(goals(results))]
    return "\n".join(lines)


def goals(results: list[dict]) -> list[str]:
    largest = max(results, key=lambda r: r["services"])
    live = largest.get("live") or {}
    p50 = (live.get("delta") or {}).get("p50_ms")
    checks = [("one change < 50 ms", p50, p50 is not None and p50 < GOAL_MS, f"{p50} ms"),
              ("controller idle CPU < 5 %", live.get("controller_idle_cpu_pct"),
               (live.get("controller_idle_cpu_pct") or 1e9) < GOAL_CPU, f"{live.get('controller_idle_cpu_pct')} %"),
              ("controller RSS < 300 MB", live.get("controller_rss_mb"),
               (live.get("controller_rss_mb") or 1e9) < GOAL_RSS_MB, f"{live.get('controller_rss_mb')} MB"),
              ("agent RSS < 300 MB", live.get("agent_rss_mb"), (live.get("agent_rss_mb") or 1e9) < GOAL_RSS_MB,
               f"{live.get('agent_rss_mb')} MB")]
    return [f"{name} at {largest['services']}: {shown} {'MET' if met else 'NOT MET'}" for name, _, met, shown in checks]


def _ms(value, width=7) -> str:
    return f"{value:>{width}.1f}ms" if value is not None else f"{'-':>{width + 2}}"


def _pct(value, width) -> str:
    return f"{value:>{width}.1f}%" if value is not None else f"{'-':>{width + 1}}"


def _mb(value, width) -> str:
    return f"{value:>{width}.0f}MB" if value is not None else f"{'-':>{width + 2}}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--changes", type=int, default=7, help="health changes timed per size and path")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    args = parser.parse_args(argv)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        result = {"services": size, "stages": measure_stages(size)}
        result["live"] = live_processes.measure(size, args.changes, args.idle)
        results.append(result)
        print(f"{size} services: {json.dumps(result)}", flush=True)
    text = render(results)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "live_pipeline.json"), "w", encoding="utf-8") as handle:
        json.dump({"machine_cpus": os.cpu_count(), "results": results, "goals": goals(results)}, handle, indent=1)
    with open(os.path.join(RESULTS, "live_pipeline.txt"), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
