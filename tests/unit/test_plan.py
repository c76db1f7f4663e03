"""The planner: pure, deterministic, and faithful to Docker's routing-mesh semantics."""
import dataclasses
import json

from ingressmesh import model
from ingressmesh.plan import ACTIVE, DRAINING, PlanOptions, plan_node, to_dict
from ingressmesh.testbed.cluster import APP_ID, scenario_cluster
from ingressmesh.testbed.topology import Testbed

NOW = 1_000_000.0


def _plan(overrides=None, node="node1", **options):
    cluster = scenario_cluster(Testbed(prefix="unit"), overrides)
    return plan_node(cluster, node, PlanOptions(now=NOW, **options))


def _web_vip(plan):
    return next(v for v in plan.namespace(f"lb:{APP_ID}").vips if v.service == "web")


def test_every_node_gets_host_ingress_and_lb_namespaces():
    for node in ("node1", "node2"):
        keys = [ns.key for ns in _plan(node=node).namespaces]
        assert keys == ["host", "ingress", f"lb:{APP_ID}"]


def test_host_forwards_published_ports_to_the_ingress_namespace():
    host = _plan().namespace("host")
    assert host.forward_to == "172.18.0.2"
    assert [(p.protocol, p.port) for p in host.ports] == [("tcp", 8080), ("tcp", 8081), ("udp", 9090), ("udp", 9091)]
    assert all(p.backends == () for p in host.ports)


def test_ingress_maps_published_port_to_task_ingress_ips_on_target_port():
    ingress = _plan(node="node2").namespace("ingress")
    assert ingress.snat_address == "10.255.0.3"
    web = next(p for p in ingress.ports if p.port == 8080)
    assert [(b.address, b.port, b.state) for b in web.backends] == [
        ("10.255.0.11", 80, ACTIVE), ("10.255.0.12", 80, ACTIVE), ("10.255.0.13", 80, ACTIVE)]


def test_vip_backends_are_task_ips_on_that_network_and_starting_tasks_are_left_out():
    vip = _web_vip(_plan())
    assert vip.vip == "10.0.1.2"
    assert [b.address for b in vip.backends] == ["10.0.1.11", "10.0.1.12", "10.0.1.13"]  # t4 starting


def test_unhealthy_and_shutting_down_tasks_drain_then_leave():
    overrides = {"t1": {"health": "unhealthy", "since": NOW - 1},
                 "t2": {"desired_state": "shutdown", "since": NOW - 5}}
    states = {b.task_id: b.state for b in _web_vip(_plan(overrides, drain_grace=10)).backends}
    assert states == {"t1": DRAINING, "t2": DRAINING, "t3": ACTIVE}
    states = {b.task_id: b.state for b in _web_vip(_plan(overrides, drain_grace=3)).backends}
    assert states == {"t1": DRAINING, "t3": ACTIVE}


def test_tasks_not_running_or_on_a_down_node_are_not_backends():
    cluster = scenario_cluster(Testbed(prefix="unit"), {"t1": {"current_state": "failed"}})
    nodes = tuple(dataclasses.replace(n, state="down") if n.id == "node2" else n for n in cluster.nodes)
    plan = plan_node(dataclasses.replace(cluster, nodes=nodes), "node1", PlanOptions(now=NOW))
    # No healthy task is left, so t4 (running, its check pending) serves in panic mode (test_panic_mode.py);
    # the failed task and those on the down node are still no backends.
    assert [b.task_id for b in _web_vip(plan).backends] == ["t4"] and _web_vip(plan).panic


def test_dnsrr_services_get_no_vip_and_host_mode_ports_are_left_alone():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    services = tuple(dataclasses.replace(s, endpoint_mode="dnsrr", ports=(
        model.PublishedPort("tcp", 7000, 80, "host"),)) if s.name == "web" else s for s in cluster.services)
    plan = plan_node(dataclasses.replace(cluster, services=services), "node1", PlanOptions(now=NOW))
    assert [v.service for v in plan.namespace(f"lb:{APP_ID}").vips] == ["empty"]
    assert all(p.port != 7000 for ns in plan.namespaces for p in ns.ports)


def test_lb_namespace_where_the_node_has_a_task_or_an_lb_endpoint_on_the_network():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    tasks = tuple(t for t in cluster.tasks if t.node_id != "node2")
    no_tasks = dataclasses.replace(cluster, tasks=tasks)
    # node2 runs no task but still has an LB endpoint on each network (Docker keeps one for any
    # container there, e.g. `docker run --network`): its VIPs are served.
    plan = plan_node(no_tasks, "node2", PlanOptions(now=NOW))
    assert [ns.key for ns in plan.namespaces if ns.role == "lb"] == [
        f"lb:{n.id}" for n in sorted(cluster.networks, key=lambda n: n.id) if not n.ingress]
    # Once the endpoint is gone too (Docker removed the sandbox), so is the namespace.
    networks = tuple(n if n.ingress else dataclasses.replace(
        n, lb_addresses=tuple(a for a in n.lb_addresses if a.node_id != "node2")) for n in cluster.networks)
    plan = plan_node(dataclasses.replace(no_tasks, networks=networks), "node2", PlanOptions(now=NOW))
    assert [ns.key for ns in plan.namespaces] == ["host", "ingress"] and plan.warnings == ()


def test_missing_addresses_hold_the_namespaces_instead_of_removing_them():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    networks = tuple(dataclasses.replace(n, lb_addresses=()) for n in cluster.networks)
    plan = plan_node(dataclasses.replace(cluster, networks=networks), "node1", PlanOptions(now=NOW))
    assert plan.namespaces == () and plan.warnings == ()
    held = dict(plan.held)
    assert held.keys() == {"host", "ingress"} | {f"lb:{n.id}" for n in cluster.networks if not n.ingress}
    assert "no ingress address for node node1 in the snapshot; kept as programmed" in held["ingress"]


def test_plan_is_deterministic_whatever_the_input_order():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    shuffled = dataclasses.replace(cluster, tasks=tuple(reversed(cluster.tasks)),
                                   services=tuple(reversed(cluster.services)))
    first = plan_node(cluster, "node1", PlanOptions(now=NOW))
    second = plan_node(shuffled, "node1", PlanOptions(now=NOW))
    assert first == second
    assert json.dumps(to_dict(first)) == json.dumps(to_dict(second))
    assert to_dict(first)["namespaces"][2]["key"] == f"lb:{APP_ID}"


def test_scheduler_label_is_carried_and_a_bad_value_falls_back_to_rr_with_a_warning():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    labelled = {"web": (("io.ingressmesh.lb.scheduler", "sh"),), "empty": (("io.ingressmesh.lb.scheduler", "fastest"),)}
    services = tuple(dataclasses.replace(s, labels=labelled.get(s.name, ())) for s in cluster.services)
    plan = plan_node(dataclasses.replace(cluster, services=services), "node1", PlanOptions(now=NOW))
    vips = {v.service: v for v in plan.namespace(f"lb:{APP_ID}").vips}
    assert vips["web"].scheduler == "sh" and vips["empty"].scheduler == "rr"
    assert {p.service: p.scheduler for p in plan.namespace("ingress").ports} == {"web": "sh", "empty": "rr"}
    assert plan.warnings == ("service empty: label io.ingressmesh.lb.scheduler='fastest' is not one of "
                             "rr, wrr, lc, sh, mh; using rr",)
