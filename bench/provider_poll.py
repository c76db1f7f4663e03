"""What listing a swarm's tasks costs the controller, and the polling it therefore picks.

Swarm has no task events, so the controller lists tasks.  The recorded API answers
(tests/unit/data/swarm_api.json, from dockerd 20.10) give the shape of one task (~2 KiB of
JSON); this benchmark makes N of them, and times what the controller does with GET /tasks:
decode the JSON (as the docker SDK does) and convert every task (swarm/state.read_tasks).
The manager's own cost of producing the answer comes on top and is not measured here.
It then prints the poll intervals swarm/provider.PollPacing picks for that cost and the share
of a core the polling then takes, busy and idle.  Rootless; no Docker involved.

    .venv/bin/python bench/provider_poll.py [--tasks 1000,10000,100000]
Results: bench/results/provider_poll.{json,txt}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import pathlib
import sys
import time

from ingressmesh.swarm.provider import PollPacing
from ingressmesh.swarm.state import SwarmState, read_tasks

RECORDED = pathlib.Path(__file__).resolve().parent.parent / "tests" / "unit" / "data" / "swarm_api.json"
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


class _Answers:
    """Answers GET /tasks with `text`, decoded on every call as the docker SDK does."""

    def __init__(self, text: str):
        self.text = text

    def tasks(self):
        return json.loads(self.text)


def tasks_text(count: int) -> str:
    recorded = json.loads(RECORDED.read_text())["tasks"]
    made = []
    for n in range(count):
        task = copy.deepcopy(recorded[n % len(recorded)])
        task["ID"] = f"{n:025d}"
        made.append(task)
    return json.dumps(made)


def measure(count: int, pacing: PollPacing) -> dict:
    text = tasks_text(count)
    api, state = _Answers(text), SwarmState()
    best = None
    for _ in range(3 if count <= 10000 else 1):
        started = time.perf_counter()
        listed = read_tasks(api, state)
        took = time.perf_counter() - started
        best = took if best is None else min(best, took)
    busy, idle = pacing.interval(True, best), pacing.interval(False, best)
    return {"tasks": count, "json_mb": round(len(text) / 1e6, 1), "converted": len(listed.tasks),
            "read_s": round(best, 3), "busy_interval_s": round(busy, 2), "idle_interval_s": round(idle, 2),
            "busy_cpu_pct": round(100 * best / (busy + best), 1), "idle_cpu_pct": round(100 * best / (idle + best), 2),
            "unpaced_busy_cpu_pct": round(100 * best / (pacing.busy_interval + best), 1)}


def render(results: list[dict]) -> str:
    lines = ["Listing tasks (GET /tasks decoded + converted) and the polling it picks",
             f"{'tasks':>8} {'JSON MB':>8} {'read':>8} {'busy every':>11} {'idle every':>11} "
             f"{'busy CPU':>9} {'idle CPU':>9} {'(fixed 1 s)':>12}"]
    for r in results:
        lines.append(f"{r['tasks']:>8} {r['json_mb']:>8.1f} {r['read_s']:>7.3f}s {r['busy_interval_s']:>10.1f}s "
                     f"{r['idle_interval_s']:>10.1f}s {r['busy_cpu_pct']:>8.1f}% {r['idle_cpu_pct']:>8.2f}% "
                     f"{r['unpaced_busy_cpu_pct']:>11.1f}%")
    lines.append("busy = something changed in the last 30 s; a node report of a new or stopping container "
                 "reads at once whatever the interval")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="1000,10000,100000")
    args = parser.parse_args(argv)
    pacing = PollPacing()
    results = [measure(int(n), pacing) for n in args.tasks.split(",")]
    text = render(results)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "provider_poll.json").write_text(json.dumps({"machine_cpus": os.cpu_count(), "results": results},
                                                           indent=1))
    (RESULTS / "provider_poll.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
