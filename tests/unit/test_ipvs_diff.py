"""The IPVS backend's pure parts: marks, desired virtual services, and the diff against a dump."""
import json
import os

import pytest

from ingressmesh.ipvs.desired import MARK_BASE, allocate_marks, mark_elements, virtual_services
from ingressmesh.ipvs.diff import KernelService, Op, diff, removed_addresses
from ingressmesh.plan import ACTIVE, DRAINING, Backend, NamespacePlan, PlanOptions, PortEntry, VipEntry, plan_node
from ingressmesh.testbed.cluster import APP_ID, scenario_cluster
from ingressmesh.testbed.topology import Testbed

M1, M2, M3 = MARK_BASE + 1, MARK_BASE + 2, MARK_BASE + 3
DOCKER = 256  # a mark Docker's own IPVS service uses on the same kernel


def _lb(*vips) -> NamespacePlan:
    return NamespacePlan(role="lb", network_id="app", snat_address="10.0.1.251", vips=tuple(vips))


def _vip(service, vip, *backends, scheduler="rr"):
    return VipEntry(service, vip, tuple(Backend(f"t{a}", a, 0, s) for a, s in backends), scheduler)


WEB = _vip("web", "10.0.1.2", ("10.0.1.11", ACTIVE), ("10.0.1.12", DRAINING), scheduler="sh")
API = _vip("api", "10.0.1.3", ("10.0.1.21", ACTIVE))
EMPTY = _vip("empty", "10.0.1.4")


def test_marks_are_stable_and_new_front_ends_get_the_lowest_free():
    plan = _lb(WEB, API, EMPTY)
    marks = allocate_marks(plan, {})
    assert marks == {("vip", "10.0.1.2"): M1, ("vip", "10.0.1.3"): M2}  # the empty one gets none
    # web's mark is still in the table (and its service in the kernel) during this apply:
    # the newcomer must not share it, or web's VIP would reach the newcomer's tasks.
    newcomer = _lb(API, _vip("new", "10.0.1.5", ("10.0.1.31", ACTIVE)))
    assert allocate_marks(newcomer, marks, frozenset({M1, M2})) == {("vip", "10.0.1.3"): M2, ("vip", "10.0.1.5"): M3}
    # Once web's service is gone from the kernel and its mark from the table, M1 is free again.
    assert allocate_marks(newcomer, {("vip", "10.0.1.3"): M2}, frozenset({M2})) == {
        ("vip", "10.0.1.3"): M2, ("vip", "10.0.1.5"): M1}


def test_desired_services_weights_and_elements():
    plan = _lb(WEB, API, EMPTY)
    marks = allocate_marks(plan, {})
    services = virtual_services(plan, marks)
    assert services[M1].scheduler == "sh"
    assert dict(services[M1].dests) == {("10.0.1.11", 0): 1, ("10.0.1.12", 0): 0}  # draining = weight 0
    assert {(e.set, e.key, e.value) for e in mark_elements(plan, marks)} == {
        ("vip_marks", ("10.0.1.2",), (M1,)), ("vip_marks", ("10.0.1.3",), (M2,)), ("vip_rejects", ("10.0.1.4",), ())}


def test_published_port_dests_use_the_target_port():
    plan = NamespacePlan(role="ingress", snat_address="10.255.0.2", ports=(
        PortEntry("web", "tcp", 8080, (Backend("t1", "10.255.0.11", 80, ACTIVE),)),))
    services = virtual_services(plan, allocate_marks(plan, {}))
    assert dict(services[M1].dests) == {("10.255.0.11", 80): 1}


# A dump as KernelIpvs.dump() returns it, recorded shape: our two services plus Docker's.
RECORDED = {
    M1: KernelService(M1, "rr", {("10.0.1.11", 0): 1, ("10.0.1.13", 0): 1}),
    M3: KernelService(M3, "rr", {("10.0.1.41", 0): 1}),
    DOCKER: KernelService(DOCKER, "rr", {("10.0.9.9", 0): 1}),
}


def test_diff_changes_only_what_differs_adds_first_and_never_touches_docker():
    plan = _lb(WEB, API)
    desired = virtual_services(plan, allocate_marks(plan, {}))
    ops = diff(RECORDED, desired)
    assert ops == [
        Op("set_service", M1, "sh"),
        Op("add_dest", M1, dest=("10.0.1.12", 0), weight=0),
        Op("add_service", M2, "rr"),
        Op("add_dest", M2, dest=("10.0.1.21", 0), weight=1),
        Op("del_dest", M1, dest=("10.0.1.13", 0)),
        Op("del_service", M3),
    ]
    assert all(op.mark != DOCKER for op in ops)
    first_removal = next(i for i, op in enumerate(ops) if op.removes)
    assert not any(op.removes for op in ops[:first_removal]) and all(op.removes for op in ops[first_removal:])
    assert removed_addresses(RECORDED, desired) == {"10.0.1.13", "10.0.1.41"}


def test_diff_of_a_matching_dump_is_empty_and_weights_are_updated_in_place():
    plan = _lb(WEB)
    desired = virtual_services(plan, allocate_marks(plan, {}))
    same = {M1: KernelService(M1, "sh", {("10.0.1.11", 0): 1, ("10.0.1.12", 0): 0})}
    assert diff(same, desired) == []
    drained = {M1: KernelService(M1, "sh", {("10.0.1.11", 0): 1, ("10.0.1.12", 0): 1})}
    assert diff(drained, desired) == [Op("set_dest", M1, dest=("10.0.1.12", 0), weight=0)]


def test_too_many_front_ends_is_a_clear_error():
    plan = _lb(*(_vip(f"s{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", ("10.200.0.1", ACTIVE))
                 for i in range(65536)))
    with pytest.raises(ValueError, match="more than 65535 front-ends"):
        allocate_marks(plan, {})


# --- against a dump recorded in the kernel lab (tests/lab/record_ipvs_dump.py) ----------------
RECORDED_NOW = 1_000_000.0


def _recorded(key: str) -> dict:
    path = os.path.join(os.path.dirname(__file__), "data", "ipvs_dump_scenario.json")
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)[key]
    return {s["mark"]: KernelService(s["mark"], s["scheduler"], {(a, p): w for a, p, w in s["dests"]}) for s in raw}


def _recorded_plan(overrides=None):
    labels = {"web": {"labels": (("io.ingressmesh.lb.scheduler", "sh"),)}}
    tasks = {"t2": {"health": "unhealthy", "since": RECORDED_NOW - 1}, **(overrides or {})}
    cluster = scenario_cluster(Testbed(prefix="rec"), tasks, labels)
    return plan_node(cluster, "node1", PlanOptions(now=RECORDED_NOW))


@pytest.mark.parametrize("key", [f"lb:{APP_ID}", "ingress"])
def test_the_plan_that_made_a_recorded_dump_needs_no_change(key):
    plan = _recorded_plan().namespace(key)
    assert diff(_recorded(key), virtual_services(plan, allocate_marks(plan, {}))) == []


def test_a_recorded_dump_diffs_to_exactly_the_plan_change():
    # t4 turns healthy, t2's drain ends: one dest added, one removed, on the web VIP only.
    plan = _recorded_plan({"t4": {"health": "healthy"}, "t2": {"health": "unhealthy", "since": 0.0}})
    lb = plan.namespace(f"lb:{APP_ID}")
    ops = diff(_recorded(f"lb:{APP_ID}"), virtual_services(lb, allocate_marks(lb, {})))
    assert ops == [Op("add_dest", M1, dest=("10.0.1.14", 0), weight=1), Op("del_dest", M1, dest=("10.0.1.12", 0))]
    assert removed_addresses(_recorded(f"lb:{APP_ID}"), virtual_services(lb, allocate_marks(lb, {}))) == {"10.0.1.12"}
