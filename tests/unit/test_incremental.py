"""The incremental planner always equals the pure planner, and leaves untouched entries alone."""
import dataclasses
import random

from ingressmesh import model
from ingressmesh.incremental import IncrementalPlanner
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.testbed.cluster import APP_ID, INGRESS_ID, scenario_cluster
from ingressmesh.testbed.topology import Testbed

NOW = 1_000_000.0


def _random_task(rng: random.Random, cluster: model.Cluster, number: int) -> model.Task:
    service = rng.choice([s for s in cluster.services if s.name != "client"])
    return model.Task(
        id=f"r{number}", service_id=service.id, node_id=rng.choice(["node1", "node2"]), slot=number,
        desired_state=rng.choice(["running", "running", "shutdown"]),
        current_state=rng.choice(["running", "running", "running", "failed", "starting"]),
        health=rng.choice(["none", "healthy", "unhealthy", "starting"]),
        since=NOW - rng.choice([0, 5, 50]),
        addresses=(model.NetworkAddress(INGRESS_ID, f"10.255.1.{number % 250 + 1}"),
                   model.NetworkAddress(APP_ID, f"10.0.1.{number % 80 + 20}")))


def test_random_changes_match_a_full_replan():
    rng = random.Random(7)
    base = scenario_cluster(Testbed(prefix="unit"))
    for node in ("node1", "node2"):
        planner = IncrementalPlanner(base, node, PlanOptions(now=NOW))
        clock = NOW
        live: list[str] = [t.id for t in base.tasks]
        for step in range(300):
            action = rng.random()
            if action < 0.5 or not live:
                task = _random_task(rng, base, step)
                planner.set_task(task)
                live.append(task.id)
            elif action < 0.75:
                old = planner.tasks[planner.task_service[rng.choice(live)]]
                victim = rng.choice(list(old.values()))
                planner.set_task(dataclasses.replace(victim, health=rng.choice(["healthy", "unhealthy"]), since=clock - 1))
            elif action < 0.9:
                gone = live.pop(rng.randrange(len(live)))
                planner.remove_task(gone)
            else:
                clock += rng.choice([0, 3, 30])  # time only moves forward
                planner.set_options(PlanOptions(now=clock))
            expected = plan_node(planner.cluster(), node, planner.options)
            assert planner.plan() == expected, f"{node} step {step}"


def test_a_task_change_keeps_other_services_entries_identical():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    planner = IncrementalPlanner(cluster, "node1", PlanOptions(now=NOW))
    before = planner.plan()
    t2 = next(t for t in cluster.tasks if t.id == "t2")
    planner.set_task(dataclasses.replace(t2, health="unhealthy", since=NOW))
    after = planner.plan()
    vips_before = {v.service: v for v in before.namespace(f"lb:{APP_ID}").vips}
    vips_after = {v.service: v for v in after.namespace(f"lb:{APP_ID}").vips}
    assert vips_after["empty"] is vips_before["empty"]
    assert vips_after["web"] is not vips_before["web"]
    assert [b.state for b in vips_after["web"].backends] == ["active", "draining", "active"]


def test_losing_the_last_local_task_drops_the_lb_namespace():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    planner = IncrementalPlanner(cluster, "node2", PlanOptions(now=NOW))
    assert planner.plan().namespace(f"lb:{APP_ID}") is not None
    for task in [t for t in cluster.tasks if t.node_id == "node2"]:
        planner.remove_task(task.id)
    assert planner.plan().namespace(f"lb:{APP_ID}") is None
    assert planner.plan() == plan_node(planner.cluster(), "node2", planner.options)
