"""Panic mode: a service (L7: a backend) with no healthy task is routed to its running tasks
instead of being refused, for VIPs, published ports and L7 backends alike (plan.serving_states)."""
import dataclasses

from ingressmesh.cli import live
from ingressmesh.daemon.metrics import AgentMetrics
from ingressmesh.dataplane.view import Row
from ingressmesh.incremental import IncrementalPlanner
from ingressmesh.l7.metrics import ProxyMetrics
from ingressmesh.l7.routes import ProxyScope, plan_routes
from ingressmesh.plan import ACTIVE, DRAINING, PlanOptions, plan_node
from ingressmesh.testbed.cluster import APP_ID, scenario_cluster
from ingressmesh.testbed.topology import Testbed

from l7_swarm import NOW as L7_NOW, cluster as l7_cluster, service, task

NOW = 1_000_000.0
ALL_SICK = {"t1": {"health": "unhealthy", "since": NOW - 100}, "t2": {"health": "unhealthy", "since": NOW - 100},
            "t3": {"health": "unhealthy", "since": NOW - 100}}


def _cluster(overrides=None):
    return scenario_cluster(Testbed(prefix="unit"), overrides)


def _entries(plan, service_name="web"):
    vip = next(v for v in plan.namespace(f"lb:{APP_ID}").vips if v.service == service_name)
    port = next(p for p in plan.namespace("ingress").ports if p.service == service_name and p.port == 8080)
    return vip, port


def _states(entry):
    return {b.task_id: b.state for b in entry.backends}


def test_every_task_unhealthy_routes_to_the_running_ones_on_vips_and_published_ports():
    plan = plan_node(_cluster(ALL_SICK), "node1", PlanOptions(now=NOW))
    vip, port = _entries(plan)
    # t4's task is running with its check not passed yet (health `starting`): in panic mode it
    # serves too, and the unhealthy ones no longer drain away.
    assert _states(vip) == _states(port) == {"t1": ACTIVE, "t2": ACTIVE, "t3": ACTIVE, "t4": ACTIVE}
    assert vip.panic and port.panic
    assert [w for w in plan.warnings if "panic" in w] == [
        "service web: no healthy task; panic mode: routing to its 4 running task(s) (starting, unhealthy)"]
    # The host namespace's forward and the service without tasks are untouched.
    assert not any(p.panic for p in plan.namespace("host").ports)
    empty = next(v for v in plan.namespace(f"lb:{APP_ID}").vips if v.service == "empty")
    assert empty.backends == () and not empty.panic


def test_one_healthy_task_keeps_the_others_out_as_before():
    overrides = dict(ALL_SICK, t3={"health": "healthy"})
    plan = plan_node(_cluster(overrides), "node1", PlanOptions(now=NOW, drain_grace=10))
    vip, port = _entries(plan)
    assert _states(vip) == _states(port) == {"t3": ACTIVE}  # t1, t2 past their drain, t4 starting
    assert not vip.panic and not any("panic" in w for w in plan.warnings)
    overrides = dict(ALL_SICK, t1={"health": "unhealthy", "since": NOW - 1}, t3={"health": "none"})
    vip, _ = _entries(plan_node(_cluster(overrides), "node1", PlanOptions(now=NOW, drain_grace=10)))
    assert _states(vip) == {"t1": DRAINING, "t3": ACTIVE}


def test_tasks_swarm_does_not_run_or_want_stay_out_in_panic_mode():
    overrides = dict(ALL_SICK, t1={"health": "unhealthy", "current_state": "starting"},  # never passed a check
                     t2={"health": "unhealthy", "desired_state": "shutdown", "since": NOW - 1},  # being stopped
                     t4={"health": "starting", "current_state": "starting"})
    plan = plan_node(_cluster(overrides), "node2", PlanOptions(now=NOW, drain_grace=10))
    assert _states(_entries(plan)[0]) == {"t2": DRAINING, "t3": ACTIVE}
    # Every running task on a node that is down: nothing to route to, so no panic either.
    cluster = _cluster(ALL_SICK)
    down = dataclasses.replace(cluster, nodes=tuple(dataclasses.replace(n, state="down") for n in cluster.nodes))
    vip, port = _entries(plan_node(down, "node2", PlanOptions(now=NOW)))
    assert (vip.backends, vip.panic, port.backends, port.panic) == ((), False, (), False)


def test_the_incremental_planner_enters_and_leaves_panic_mode_like_a_full_plan():
    options = PlanOptions(now=NOW)
    healthy = _cluster()
    planner = IncrementalPlanner(healthy, "node1", options)
    for current in (_cluster(ALL_SICK), healthy):
        for t in current.tasks:
            planner.set_task(t)
        assert planner.plan() == plan_node(current, "node1", options)
    assert not _entries(planner.plan())[0].panic


def test_agent_metrics_name_each_service_in_panic_mode():
    metrics = AgentMetrics()
    metrics.set_panic(["web"])
    assert 'ingressmesh_service_panic{service="web"} 1.0' in metrics.render()[1].decode()
    metrics.set_panic([])
    assert 'ingressmesh_service_panic{' not in metrics.render()[1].decode()


def test_show_marks_the_rows_of_a_service_in_panic_mode():
    index = live.task_index(_cluster(ALL_SICK))
    t1 = next(t for t in _cluster().tasks if t.id == "t1")
    address = t1.address_on(APP_ID)
    row = Row(service="web", frontend="10.0.1.2", backends=((address, ACTIVE),))
    assert live.annotated([row], index)[0]["state"] == "active (panic: no healthy task)"
    assert live.as_json([row], index)[0]["backends"][0]["panic"] is True
    assert live.annotated([row], live.task_index(_cluster()))[0]["state"] == ACTIVE


def _l7(services, tasks):
    return plan_routes(l7_cluster(services, tasks), ProxyScope(), PlanOptions(now=L7_NOW, drain_grace=10.0))


def test_l7_backend_with_no_healthy_server_serves_its_running_tasks_and_says_so():
    table = _l7([service("a", {"hosts": "a.com", "port": "80"})],
                [task("a1", "a", 2, health="unhealthy"), task("a2", "a", 3, health="unhealthy", node="n2"),
                 task("a3", "a", 4, health="starting", current_state="starting")])
    backend = table.backends[0]
    assert [(s.task_id, s.state, s.health) for s in backend.servers] == [
        ("a1", ACTIVE, "unhealthy"), ("a2", ACTIVE, "unhealthy")]
    assert backend.panic
    assert f"backend {backend.name} (a): no healthy task; panic mode: routing to its 2 running task(s) " \
           "(unhealthy)" in table.notes
    metrics = ProxyMetrics()
    metrics.observe_table(table)
    assert f'ingressmesh_l7_panic_backend{{backend="{backend.name}"}} 1.0' in metrics.render()[1].decode()


def test_l7_panic_is_per_backend_a_sick_canary_gets_nothing_while_the_stable_one_is_healthy():
    services = [service("v1", {"hosts": "app.com", "port": "80"}), service("v2", {"hosts": "app.com", "port": "80"})]
    table = _l7(services, [task("v1-0", "v1", 10, health="healthy"), task("v2-0", "v2", 20, health="unhealthy")])
    assert [s.task_id for s in table.backends[0].servers] == ["v1-0"] and not table.backends[0].panic
    assert not any("panic" in n for n in table.notes)


def test_l7_vip_mode_keeps_the_vip_in_panic_mode():
    table = _l7([service("a", {"hosts": "a.com", "port": "80", "backend_mode": "vip"}, vip="100")],
                [task("a1", "a", 2, health="unhealthy")])
    assert [(s.task_id, s.address, s.state) for s in table.backends[0].servers] == [("vip", "10.0.1.100", ACTIVE)]
    assert table.backends[0].panic
