"""The incremental planner always equals the pure planner, and leaves untouched entries alone."""
import dataclasses
import random

import pytest

from ingressmesh import model
from ingressmesh.incremental import IncrementalPlanner
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.testbed.cluster import APP_ID, INGRESS_ID, scenario_cluster
from ingressmesh.testbed.topology import Testbed

NOW = 1_000_000.0


def _random_task(rng: random.Random, planner: IncrementalPlanner, number: int) -> model.Task:
    service = rng.choice(sorted(planner.services))
    return model.Task(
        id=f"r{number}", service_id=service, node_id=rng.choice(["node1", "node2"]), slot=number,
        desired_state=rng.choice(["running", "running", "shutdown"]),
        current_state=rng.choice(["running", "running", "running", "failed", "starting"]),
        health=rng.choice(["none", "healthy", "unhealthy", "starting"]),
        since=NOW - rng.choice([0, 5, 50]),
        addresses=(model.NetworkAddress(INGRESS_ID, f"10.255.1.{number % 250 + 1}"),
                   model.NetworkAddress(APP_ID, f"10.0.1.{number % 80 + 20}")))


def _random_service(rng: random.Random, planner: IncrementalPlanner, number: int) -> model.Service:
    """A changed or a new service.  Each call gets its own port range and each new service its
    own VIP, as in a valid cluster: front-ends that collide are tested on their own below."""
    if rng.random() < 0.5 and planner.services:
        old = planner.services[rng.choice(sorted(planner.services))]
    else:
        old = model.Service(id=f"s{number}", name=f"svc{number}",
                            vips=(model.VirtualIP(APP_ID, f"10.0.{2 + number // 200}.{number % 200 + 1}"),))
    base = 10000 + 10 * (number % 1000)
    ports = tuple(model.PublishedPort(rng.choice(["tcp", "udp"]), base + k, 80 + k,
                                      rng.choice(["ingress", "ingress", "host"]))
                  for k in rng.sample(range(10), rng.randrange(3)))
    return dataclasses.replace(old, ports=ports, endpoint_mode=rng.choice(["vip", "vip", "dnsrr"]))


def _random_options(rng: random.Random, options: PlanOptions) -> PlanOptions:
    """Mostly the clock moving forward (the cheap path), sometimes anything else."""
    change = rng.choice(["forward", "forward", "forward", "back", "grace", "gateway"])
    if change == "forward":
        return dataclasses.replace(options, now=options.now + rng.choice([0, 3, 30]))
    if change == "back":
        return dataclasses.replace(options, now=options.now - rng.choice([3, 30]))
    if change == "grace":
        return dataclasses.replace(options, drain_grace=rng.choice([2.0, 10.0, 60.0]))
    return dataclasses.replace(options, ingress_gateway=rng.choice(["172.18.0.2", "172.18.0.9"]))


def _random_step(rng: random.Random, planner: IncrementalPlanner, step: int) -> None:
    action = rng.random()
    live = sorted(planner.task_service)
    if action < 0.35 or not live:
        planner.set_task(_random_task(rng, planner, step))
    elif action < 0.55:
        victim = planner.tasks[planner.task_service[(task_id := rng.choice(live))]][task_id]
        planner.set_task(dataclasses.replace(victim, health=rng.choice(["healthy", "unhealthy"]),
                                             since=planner.options.now - 1))
    elif action < 0.65:
        planner.remove_task(rng.choice(live))
    elif action < 0.75:
        planner.set_service(_random_service(rng, planner, step))
    elif action < 0.8:
        if len(planner.services) > 3:
            planner.remove_service(rng.choice(sorted(planner.services)))
    else:
        planner.set_options(_random_options(rng, planner.options))


@pytest.mark.parametrize("seed", [7, 11, 23])
@pytest.mark.parametrize("node", ["node1", "node2"])
def test_random_changes_match_a_full_replan(seed, node):
    rng = random.Random(seed)
    planner = IncrementalPlanner(scenario_cluster(Testbed(prefix="unit")), node, PlanOptions(now=NOW))
    for step in range(300):
        _random_step(rng, planner, step)
        if rng.random() < 0.7:  # sometimes let changes pile up between two plan() calls
            expected = plan_node(planner.cluster(), node, planner.options)
            assert planner.plan() == expected, f"seed {seed} step {step}"
    assert planner.plan() == plan_node(planner.cluster(), node, planner.options)


def _with_ended_drain() -> model.Cluster:
    """t2 turned unhealthy 50 s ago: past the default 10 s grace, so no longer a backend."""
    return scenario_cluster(Testbed(prefix="unit"), {"t2": {"health": "unhealthy", "since": NOW - 50}})


@pytest.mark.parametrize("change", [
    {"drain_grace": 100.0},  # t2's ended drain comes back
    {"ingress_gateway": "172.18.0.9"},  # the host namespace forwards elsewhere
    {"now": NOW - 45},  # the clock steps back into t2's grace
])
def test_option_changes_other_than_time_moving_on_replan_everything(change):
    planner = IncrementalPlanner(_with_ended_drain(), "node1", PlanOptions(now=NOW))
    before = planner.plan()
    planner.set_options(dataclasses.replace(planner.options, **change))
    after = planner.plan()
    assert after == plan_node(planner.cluster(), "node1", planner.options)
    assert after != before


def test_time_moving_on_ends_a_drain_and_keeps_other_entries_identical():
    cluster = scenario_cluster(Testbed(prefix="unit"), {"t2": {"health": "unhealthy", "since": NOW - 5}})
    planner = IncrementalPlanner(cluster, "node1", PlanOptions(now=NOW))
    before = planner.plan()
    planner.set_options(PlanOptions(now=NOW + 10))
    after = planner.plan()
    assert after == plan_node(planner.cluster(), "node1", planner.options)
    vips_before = {v.service: v for v in before.namespace(f"lb:{APP_ID}").vips}
    vips_after = {v.service: v for v in after.namespace(f"lb:{APP_ID}").vips}
    assert vips_after["empty"] is vips_before["empty"]
    assert "t2" not in {b.task_id for b in vips_after["web"].backends}


def test_two_services_with_one_vip_still_match_a_full_replan():
    """The snapshot rejects this, but the planner must not silently differ from plan_node."""
    cluster = scenario_cluster(Testbed(prefix="unit"))
    web = next(s for s in cluster.services if s.name == "web")
    twin = dataclasses.replace(web, id="svctwin", name="twin", ports=())
    cluster = dataclasses.replace(cluster, services=cluster.services + (twin,),
                                  tasks=cluster.tasks + (model.Task(id="w1", service_id="svctwin", node_id="node2",
                                                                    addresses=(model.NetworkAddress(APP_ID, "10.0.1.60"),)),))
    planner = IncrementalPlanner(cluster, "node1", PlanOptions(now=NOW))
    planner.plan()
    t1 = next(t for t in cluster.tasks if t.id == "t1")
    planner.set_task(dataclasses.replace(t1, health="unhealthy", since=NOW))
    planner.set_task(model.Task(id="w2", service_id="svctwin", node_id="node2",
                                addresses=(model.NetworkAddress(APP_ID, "10.0.1.61"),)))
    lb = planner.plan().namespace(f"lb:{APP_ID}")
    assert planner.plan() == plan_node(planner.cluster(), "node1", planner.options)
    assert [v.service for v in lb.vips if v.vip == web.vip_on(APP_ID)] == ["web", "twin"]


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


def test_losing_the_last_local_task_keeps_the_lb_namespace_while_the_endpoint_exists():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    planner = IncrementalPlanner(cluster, "node2", PlanOptions(now=NOW))
    assert planner.plan().namespace(f"lb:{APP_ID}") is not None
    for task in [t for t in cluster.tasks if t.node_id == "node2"]:
        planner.remove_task(task.id)
    assert planner.plan().namespace(f"lb:{APP_ID}") is not None  # node2 still has an lb endpoint
    assert planner.plan() == plan_node(planner.cluster(), "node2", planner.options)