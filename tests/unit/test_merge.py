"""Controller merge: swarm state + node reports → one validated cluster; culprits dropped by name."""
import dataclasses
import json
import pathlib

from ingressmesh import model
from ingressmesh.controller.merge import SinceTracker, merge
from ingressmesh.plan import ACTIVE, DRAINING, PlanOptions, plan_node
from ingressmesh.swarm.state import read_swarm

from test_swarm_convert import RecordedApi

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "swarm_api.json").read_text())
STATE = read_swarm(RecordedApi(DATA))
WEB = next(s for s in STATE.services if s.name == "web")
OVL = next(n for n in STATE.networks if n.name == "ovl")
INGRESS = next(n for n in STATE.networks if n.ingress)


def _reports(**containers):
    """One report per node giving each an lb address; containers: task id -> entry."""
    reports = {}
    for i, node in enumerate(sorted(STATE.nodes, key=lambda n: n.hostname)):
        reports[node.id] = {"node_id": node.id, "lb_addresses": {OVL.id: f"10.200.1.{200 + i}",
                                                                  INGRESS.id: f"10.200.0.{200 + i}"},
                            "containers": {}}
    for task_id, entry in containers.items():
        task = next(t for t in STATE.tasks if t.id == task_id)
        reports[task.node_id]["containers"][task_id] = entry
    return reports


def _web_tasks():
    return sorted((t for t in STATE.tasks if t.service_id == WEB.id), key=lambda t: t.id)


def test_lb_addresses_and_health_come_from_the_nodes():
    a, b, c = _web_tasks()
    merged = merge(STATE, _reports(**{a.id: {"health": "healthy"}, b.id: {"health": "unhealthy"}}),
                   SinceTracker(), now=100.0)
    tasks = {t.id: t for t in merged.cluster.tasks}
    assert tasks[a.id].health == "healthy" and tasks[b.id].health == "unhealthy"
    # Not reported yet, and web has a health check: it must earn its traffic first.
    assert tasks[c.id].health == "starting"
    ovl = next(n for n in merged.cluster.networks if n.id == OVL.id)
    assert len(ovl.lb_addresses) == 3
    plan = plan_node(merged.cluster, a.node_id, PlanOptions(now=100.0))
    lb = plan.namespace(f"lb:{OVL.id}")
    (vip,) = [v for v in lb.vips if v.service == "web"]
    assert [x.task_id for x in vip.active()] == [a.id]


def test_a_stopping_container_drains_before_the_manager_notices():
    a, b, _ = _web_tasks()
    tracker = SinceTracker()
    reports = _reports(**{a.id: {"health": "healthy"}, b.id: {"health": "healthy"}})
    merge(STATE, reports, tracker, now=100.0)
    reports[b.node_id]["containers"][b.id] = {"health": "healthy", "stopping": True}
    merged = merge(STATE, reports, tracker, now=105.0)
    task_b = next(t for t in merged.cluster.tasks if t.id == b.id)
    assert task_b.desired_state == "shutdown" and task_b.since == 105.0
    plan = plan_node(merged.cluster, a.node_id, PlanOptions(now=106.0))
    states = {x.task_id: x.state for v in plan.namespace(f"lb:{OVL.id}").vips if v.service == "web" for x in v.backends}
    assert states[b.id] == DRAINING and states[a.id] == ACTIVE


def test_since_is_kept_while_nothing_changes():
    tracker = SinceTracker()
    first = merge(STATE, _reports(), tracker, now=10.0)
    again = merge(STATE, _reports(), tracker, now=50.0)
    assert {t.since for t in first.cluster.tasks} == {t.since for t in again.cluster.tasks} == {10.0}


def test_a_service_claiming_a_published_port_twice_is_refused_by_name_and_the_rest_kept():
    copy = dataclasses.replace(WEB, id="zzzcopy", name="webcopy", vips=())
    state = dataclasses.replace(STATE, services=STATE.services + (copy,))
    merged = merge(state, _reports(), SinceTracker(), now=1.0)
    assert [s.name for s in merged.cluster.services if s.name.startswith("web")] == ["web"]
    assert any(r.startswith("service 'webcopy': ") and "8080" in r for r in merged.refused)


def _merged_with_lb_address(node_index: int, address: str):
    """Merge with one node reporting `address` as its ovl lb address: (node, merged, ovl)."""
    reports = _reports()
    node = sorted(STATE.nodes, key=lambda n: n.hostname)[node_index]
    reports[node.id]["lb_addresses"][OVL.id] = address
    merged = merge(STATE, reports, SinceTracker(), now=1.0)
    return node, merged, next(n for n in merged.cluster.networks if n.id == OVL.id)


def test_a_bad_lb_address_from_one_node_is_dropped_naming_the_node():
    node, merged, ovl = _merged_with_lb_address(1, "192.168.9.9")
    assert node.id not in {a.node_id for a in ovl.lb_addresses} and len(ovl.lb_addresses) == 2
    assert any("network 'ovl'" in r and "192.168.9.9" in r for r in merged.refused)


def test_only_running_tasks_are_kept():
    dead = dataclasses.replace(_web_tasks()[0], id="deadtask", current_state="failed", desired_state="shutdown")
    state = dataclasses.replace(STATE, tasks=STATE.tasks + (dead,))
    merged = merge(state, _reports(), SinceTracker(), now=1.0)
    assert "deadtask" not in {t.id for t in merged.cluster.tasks}
    assert isinstance(merged.cluster, model.Cluster)


def test_tasks_of_a_refused_service_go_quietly():
    # absurd2 and absurd3 were refused by the provider; their running tasks are in the list.
    merged = merge(STATE, _reports(), SinceTracker(), now=1.0)
    assert merged.refused == STATE.errors
    services = {s.id for s in merged.cluster.services}
    assert all(t.service_id in services for t in merged.cluster.tasks)


def test_a_malformed_lb_address_is_ignored_not_a_crash():
    node, _, ovl = _merged_with_lb_address(0, "not-an-address")
    assert node.id not in {a.node_id for a in ovl.lb_addresses}


def test_a_silent_node_keeps_its_running_health_checked_tasks_in_service():
    a, b, c = _web_tasks()
    reports = _reports(**{a.id: {"health": "healthy"}})
    silent = c.node_id
    assert silent != a.node_id
    del reports[silent]  # that node's agent is stopped (or this controller just started)
    merged = merge(STATE, reports, SinceTracker(), now=100.0)
    tasks = {t.id: t for t in merged.cluster.tasks}
    assert tasks[c.id].health == "healthy"  # running in Swarm = it passed its health check
    plan = plan_node(merged.cluster, a.node_id, PlanOptions(now=100.0))
    (vip,) = [v for v in plan.namespace(f"lb:{OVL.id}").vips if v.service == "web"]
    assert c.id in [x.task_id for x in vip.active()]
