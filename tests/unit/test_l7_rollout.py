"""How a proxy service rolls, and when a roll counts as stuck (issue 20, point 1)."""
from ingressmesh.l7 import rollout
from ingressmesh.l7.proxy_service import desired_spec
from ingressmesh.l7.settings import ProxyServiceSettings
from ingressmesh.swarm.convert import parse_timestamp

from l7_swarm import cluster

NOW = parse_timestamp("2026-12-06T01:00:00Z")


def node(name: str, role="worker", labels=None, state="ready", availability="active") -> dict:
    return {"ID": f"id-{name}", "Description": {"Hostname": name, "Platform": {"OS": "linux"}},
            "Spec": {"Role": role, "Availability": availability, "Labels": labels or {}}, "Status": {"State": state}}


NODES = [node("n1", "manager", {"lb": "yes"}), node("n2", labels={"lb": "yes"}), node("n3"),
         node("n4", labels={"lb": "yes"}, state="down"), node("n5", labels={"lb": "yes"}, availability="drain")]


def test_eligible_nodes_are_ready_active_and_match_every_constraint():
    assert rollout.eligible_nodes(NODES, ()) == 3
    assert rollout.eligible_nodes(NODES, ("node.labels.lb==yes",)) == 2
    assert rollout.eligible_nodes(NODES, ("node.labels.lb == yes", "node.role!=manager")) == 1
    assert rollout.eligible_nodes(NODES, ("node.hostname==n3",)) == 1
    assert rollout.eligible_nodes(NODES, ("node.labels.lb!=yes",)) == 1  # n3: the label missing is not "yes"
    assert rollout.eligible_nodes(NODES, ("node.platform.os==linux",)) == 3
    assert rollout.eligible_nodes(NODES, ("some.unknown.key==x",)) == 0  # not understood: not counted


def test_host_mode_proxies_on_every_eligible_node_roll_stop_first_the_others_start_first():
    pinned = ProxyServiceSettings(publish_mode="host", replicas=2, constraints=("node.labels.lb==yes",))
    assert rollout.update_order(pinned, rollout.eligible_nodes(NODES, pinned.constraints)) == "stop-first"
    assert rollout.update_order(pinned, 3) == "start-first"  # a spare node takes the new task
    assert rollout.update_order(pinned, None) == "stop-first"  # unknown: never stuck
    assert rollout.update_order(ProxyServiceSettings(publish_mode="ingress", replicas=5), 1) == "start-first"
    spec = desired_spec(pinned, cluster([], []), ("tid", "tok"), ("http://c:9401",), order="stop-first")
    assert spec["UpdateConfig"]["Order"] == "stop-first" and spec["UpdateConfig"]["Parallelism"] == 1


def _service(state: str, started: str = "2026-12-06T00:59:00Z", message: str = "") -> dict:
    return {"ID": "sid", "Version": {"Index": 42}, "Spec": {"Name": "proxy"},
            "UpdateStatus": {"State": state, "StartedAt": started, "Message": message}}


def _pending(since: str) -> list[dict]:
    return [{"DesiredState": "running", "Status": {"State": "pending", "Timestamp": since,
                                                   "Err": "no suitable node (host-mode port already in use on 3 nodes)"}}]


def problem(service, tasks=()):
    return rollout.update_problem(service, lambda: list(tasks), NOW, parse_timestamp, 300.0)


def test_a_stuck_update_is_named():
    assert problem({"ID": "sid", "Spec": {"Name": "proxy"}}) is None  # never updated
    assert problem(_service("completed")) is None
    assert problem(_service("paused", message="update paused due to failure or early termination of task x")) == \
        "proxy service proxy: update paused: update paused due to failure or early termination of task x"
    assert "rollback paused" in problem(_service("rollback_paused"))
    just_started = _service("updating", started="2026-12-06T00:59:55Z")
    assert problem(just_started, _pending("2026-12-06T00:59:55Z")) is None  # 5 s: Swarm may still place it
    found = problem(_service("updating", started="2026-12-06T00:59:30Z"), _pending("2026-12-06T00:59:59Z"))
    assert found.startswith("proxy service proxy: update stuck: a new task cannot be scheduled") and \
        "host-mode port already in use" in found
    assert problem(_service("updating", started="2026-12-06T00:54:00Z")) == \
        "proxy service proxy: update (spec version 42) has not finished in 300 s"


def test_tasks_are_asked_for_only_while_an_update_runs():
    def boom():
        raise AssertionError("tasks listed for a finished update")
    assert rollout.update_problem(_service("completed"), boom, NOW, parse_timestamp, 300.0) is None


def test_patience_grows_with_replicas_and_stop_grace():
    assert rollout.patience(ProxyServiceSettings(replicas=2, stop_grace_period=30, update_delay=1)) == 120 + 2 * 61
