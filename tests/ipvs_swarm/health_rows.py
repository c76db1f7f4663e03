"""The health rows of the side-by-side table, measured the same way for every mesh (Docker's own
mesh too: it takes a task out of its IPVS service when Docker marks it unhealthy, and adds a task
only once it is healthy): a task turned unhealthy leaves every node (how long), and the task that
replaces it, `starting` until its check passes, gets nothing meanwhile.

One `hc` service serves all three meshes in turn.  Its check passes once /tmp/up exists and while
/tmp/sick does not: a new task stays `starting` (a long start period) until the test says it is
up, so "starting" lasts as long as the test needs, whatever the emulation's speed."""
from __future__ import annotations

import time

from ingressmesh.lab.lab import LabError
from ipvs_swarm_helpers import SERVER, SLOW, http_get
from swarm_helpers import create_service, remove_service, running_tasks, wait_for

HC = "hc"
HEALTH_PORT = 8082
ROUND = 9  # requests per node per round: three times round the 3 tasks under rr
# The check's timeout is long on purpose: under emulation Docker's exec of a check takes seconds,
# and a 2 s timeout made every task unhealthy in turn, so that three never ran at once (two runs).
HEALTH = ("--health-cmd", "test -e /tmp/up && test ! -e /tmp/sick", "--health-interval", "2s",
          "--health-timeout", "30s", "--health-retries", "1", "--health-start-period", "600s")


def seen_per_node(lab) -> dict[int, set]:
    """Per node: the tasks one round of requests through hc's published port reached (a failed
    request is recorded as "failed": the unhealthy task still serves until Swarm stops it)."""
    seen = {}
    for n in lab.config.node_numbers:
        names = set()
        for _ in range(ROUND):
            try:
                names.add(http_get(lab.client_netns(), lab.node_address(n), HEALTH_PORT))
            except OSError:
                names.add("failed")
        seen[n] = names
    return seen


def mark_up(lab, task: dict) -> None:
    lab.docker(int(task["node"].removeprefix("node")), "exec", task["container"], "touch", "/tmp/up")


def mark_replacement_up(lab, old: set, new: dict) -> dict:
    """Tells hc's starting replacement it is up; the task told.  Swarm may have replaced that task
    again before (its container gone: "is not running", seen once under emulation): then its
    successor is told instead (bounded)."""
    told = {"task": new}

    def attempt():
        try:
            mark_up(lab, told["task"])
            return told["task"]
        except LabError as err:
            found = [t for t in running_tasks(lab, HC, "starting") if t["container"] not in old | {told["task"]["container"]}]
            if "is not running" not in str(err) and "No such container" not in str(err) or not found:
                raise
            print(f"hc's replacement {told['task']['container']} went before it was told it is up ({err}); "
                  f"its successor {found[0]['container']} is told instead", flush=True)
            told["task"] = found[0]
            return None
    return wait_for("hc's replacement told it is up", attempt, timeout=SLOW, interval=1)


def healthy_everywhere(lab) -> list[dict]:
    """hc's 3 tasks healthy (any `starting` one is told it is up) and reached through every node."""
    def all_up() -> list[dict]:
        for task in running_tasks(lab, HC, "starting"):
            mark_up(lab, task)
        running = running_tasks(lab, HC)
        return running if len(running) == 3 else []

    tasks = wait_for("3 healthy tasks of hc", all_up, timeout=SLOW, interval=2)
    names = {t["container"] for t in tasks}
    wait_for("every node reaches the 3 healthy tasks of hc",
             lambda: all(seen == names for seen in seen_per_node(lab).values()), timeout=SLOW, interval=1)
    return tasks


def measure(lab, results, mesh: str) -> None:
    """Both rows for `mesh`; asserted for ingressmesh, measured only for Docker's own mesh."""
    tasks = healthy_everywhere(lab)
    sick = tasks[0]
    lab.docker(int(sick["node"].removeprefix("node")), "exec", sick["container"], "touch", "/tmp/sick")
    started, rounds, failed, gone_since, clean_rounds = time.monotonic(), [], 0, None, 0
    while clean_rounds < 2 and time.monotonic() - started < 60:  # out: two rounds in a row without it
        at, seen = time.monotonic() - started, seen_per_node(lab)
        rounds.append((round(at, 1), {n: sorted(v) for n, v in seen.items()}))
        failed += sum("failed" in v for v in seen.values())
        if any(sick["container"] in v for v in seen.values()):
            gone_since, clean_rounds = None, 0
        else:
            gone_since, clean_rounds = (at if gone_since is None else gone_since), clean_rounds + 1
    print(f"{mesh}: after hc's check was made to fail: {rounds}")
    results.put(mesh, "a task turned unhealthy: out of every node after",
                f"{gone_since:.1f} s (rounds of {ROUND} requests per node; {failed} rounds saw a failure)"
                if clean_rounds == 2 else f"still answering after 60 s: {rounds[-1]}")
    if mesh != "docker":
        assert clean_rounds == 2, f"the unhealthy task still answered through a node after 60 s: {rounds[-1]}"

    # Swarm replaces it; the new task is `starting` until it is told it is up.
    old = {t["container"] for t in tasks}
    new = wait_for("hc's replacement task, starting", lambda: [t for t in running_tasks(lab, HC, "starting")
                                                             if t["container"] not in old], timeout=SLOW, interval=1)[0]
    reached, total = 0, 0
    for _ in range(3):
        for seen in seen_per_node(lab).values():
            reached += new["container"] in seen
            total += 1
    results.put(mesh, "a `starting` task gets nothing",
                f"reached in {reached} of {total} rounds of {ROUND} requests through a node")
    if mesh != "docker":
        assert reached == 0, f"{mesh} sent requests to a starting task"
    marked = time.monotonic()
    new = mark_replacement_up(lab, old, new)
    wait_for("every node reaches hc's new task once healthy", lambda: all(
        new["container"] in seen for seen in seen_per_node(lab).values()), timeout=SLOW, interval=1)
    print(f"{mesh}: hc's new task reached through every node {time.monotonic() - marked:.1f} s after its check "
          "was made to pass", flush=True)


def hc_service(lab):
    """Module-fixture body: hc made (on web's overlay), removed at the end."""
    create_service(lab, HC, "--replicas", "3", "--network", "ovl", "--publish", f"{HEALTH_PORT}:80", *HEALTH,
                   command=("sh", "-c", SERVER))
    try:
        yield HC
    finally:
        remove_service(lab, HC)
