"""The agent's ClusterFollower: snapshot after snapshot, the same plan as planning from scratch,
at the cost of the objects that changed; a bad object is refused by name and nothing moves."""
import copy
import dataclasses
import random

import pytest

from ingressmesh import snapshot
from ingressmesh.agent.cluster_follower import ClusterFollower
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.testbed.cluster import scenario_cluster
from ingressmesh.testbed.topology import Testbed

NOW = 1000.0


def _start(clock=lambda: NOW):
    data = snapshot.to_dict(scenario_cluster(Testbed(prefix="unit")))
    follower = ClusterFollower("node1", clock=clock)
    follower.take(data, PlanOptions(now=NOW))
    return follower, data


def _expected(data, now=NOW, follower=None):
    """plan_node on the snapshot, with each task's `since` as the follower stamped it on arrival."""
    cluster = snapshot.from_dict(data)
    if follower is not None:
        cluster = dataclasses.replace(cluster, tasks=tuple(
            dataclasses.replace(t, since=follower.arrival.seen[t.id][1]) for t in cluster.tasks))
    return plan_node(cluster, "node1", PlanOptions(now=now))


def test_first_snapshot_is_a_full_sync_and_plans_like_plan_node():
    follower, data = _start()
    assert follower.full_syncs == 1 and follower.node_known()
    assert follower.plan(PlanOptions(now=NOW)) == _expected(data)


def test_random_task_and_service_changes_take_the_fast_path_and_stay_equal():
    clock = [NOW]
    follower, data = _start(lambda: clock[0])
    rng = random.Random(7)
    for step in range(60):
        data = copy.deepcopy(data)
        tasks = data["tasks"]
        choice = rng.choice(("health", "drain", "remove", "readd", "label"))
        if choice == "health" and tasks:
            rng.choice(tasks)["health"] = rng.choice(("healthy", "unhealthy", "starting", "none"))
        elif choice == "drain" and tasks:
            task = rng.choice(tasks)
            task["desired_state"], task["since"] = "shutdown", NOW + step - 5
        elif choice == "remove" and len(tasks) > 1:
            tasks.remove(rng.choice(tasks))
        elif choice == "readd":
            base = snapshot.to_dict(scenario_cluster(Testbed(prefix="unit")))
            missing = [t for t in base["tasks"] if t["id"] not in {x["id"] for x in tasks}]
            if missing:
                tasks.append(rng.choice(missing))
        else:
            service = rng.choice(data["services"])
            service["labels"] = {"io.ingressmesh.lb.scheduler": rng.choice(("rr", "sh", "bogus"))}
        now = NOW + step
        clock[0] = now - rng.choice((0, 3, 9, 12))  # arrivals at various ages, some past the grace
        follower.take(data, PlanOptions(now=now))
        assert follower.plan(PlanOptions(now=now)) == _expected(data, now, follower), (step, choice)
    assert follower.full_syncs == 1 and follower.changed_objects > 0


def test_a_removed_service_with_its_tasks_and_a_new_one():
    follower, data = _start()
    data = copy.deepcopy(data)
    gone = data["services"].pop(0)
    data["tasks"] = [t for t in data["tasks"] if t["service_id"] != gone["id"]]
    follower.take(data, PlanOptions(now=NOW))
    assert follower.plan(PlanOptions(now=NOW)) == _expected(data) and follower.full_syncs == 1
    data = copy.deepcopy(data)
    data["services"].append(gone)
    follower.take(data, PlanOptions(now=NOW))
    assert follower.plan(PlanOptions(now=NOW)) == _expected(data) and follower.full_syncs == 1


def test_node_or_network_changes_take_the_full_path():
    follower, data = _start()
    data = copy.deepcopy(data)
    data["nodes"][1]["state"] = "down"
    follower.take(data, PlanOptions(now=NOW))
    assert follower.full_syncs == 2 and follower.plan(PlanOptions(now=NOW)) == _expected(data)


@pytest.mark.parametrize("breakage, culprit", [
    (lambda d: d["tasks"][0].update(health="sickish"), "tasks["),
    (lambda d: d["tasks"][0].update(service_id="nosuchservice"), "'nosuchservice' is not a known service"),
    (lambda d: d["services"][0].update(name="bad name!"), "services["),
])
def test_a_bad_object_is_refused_by_name_and_the_view_is_kept(breakage, culprit):
    follower, data = _start()
    before = follower.plan(PlanOptions(now=NOW))
    bad = copy.deepcopy(data)
    bad["tasks"][0]["health"] = "unhealthy"  # a valid change alongside the bad one
    breakage(bad)
    with pytest.raises(snapshot.SnapshotError, match=culprit.replace("[", r"\[")):
        follower.take(bad, PlanOptions(now=NOW))
    assert follower.plan(PlanOptions(now=NOW)) == before
