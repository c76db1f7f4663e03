"""The snapshot format: round trips exactly, and every bad field is named by its path."""
import json

import pytest

from ingressmesh import snapshot
from ingressmesh.testbed.cluster import scenario_cluster
from ingressmesh.testbed.topology import Testbed


def _cluster_dict():
    return snapshot.to_dict(scenario_cluster(Testbed(prefix="unit")))


def test_round_trip_is_exact_and_stable():
    cluster = scenario_cluster(Testbed(prefix="unit"))
    text = snapshot.dumps(cluster)
    assert snapshot.loads(text) == cluster
    assert snapshot.dumps(snapshot.loads(text)) == text


def test_labels_survive_as_an_object():
    data = _cluster_dict()
    data["services"][0]["labels"] = {"com.docker.lb.hosts": "a.example", "b": "2"}
    cluster = snapshot.from_dict(data)
    assert dict(cluster.services[0].labels) == {"com.docker.lb.hosts": "a.example", "b": "2"}
    assert snapshot.to_dict(cluster)["services"][0]["labels"] == {"com.docker.lb.hosts": "a.example", "b": "2"}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["services"][0]["ports"][0].update(protocol="tcpx"),
     "services[0].ports[0].protocol: 'tcpx' is not tcp or udp"),
    (lambda d: d["services"][0]["ports"][1].update(published_port=70000),
     "services[0].ports[1].published_port: 70000 is not a port (1-65535)"),
    (lambda d: d["tasks"][2]["addresses"][0].update(address="10.0.1.300"),
     "tasks[2].addresses[0].address: '10.0.1.300' is not an IPv4 address"),
    (lambda d: d["tasks"][1].update(health="sick"),
     "tasks[1].health: 'sick' is not none, starting, healthy, unhealthy"),
    (lambda d: d["tasks"][0].update(service_id="nope"),
     "tasks[0].service_id: 'nope' is not a known service"),
    (lambda d: d["services"][1].update(name="bad name; drop"),
     "services[1].name: 'bad name; drop' is not a valid service name"),
    (lambda d: d["services"][1].update(name="api\n"),  # a trailing newline once slipped through `$`
     "services[1].name: 'api\\n' is not a valid service name"),
    (lambda d: d["networks"][0].update(subnet="nonsense"),
     "networks[0].subnet: 'nonsense' is not an IPv4 subnet"),
    (lambda d: d["services"][1]["ports"][0].update(published_port=8080),
     "services[1].ports[0].published_port: tcp/8080 is already published by 'web'"),
    (lambda d: d.pop("nodes") and d.update(nodes={}), "nodes: expected a list"),
    (lambda d: d["nodes"][0].pop("address"), "nodes[0].address: missing"),
])
def test_bad_field_is_named(mutate, message):
    data = _cluster_dict()
    mutate(data)
    with pytest.raises(snapshot.SnapshotError) as err:
        snapshot.from_dict(data)
    assert message in str(err.value)


def test_node_hostnames_up_to_253_characters_in_labels_of_up_to_63():
    data = _cluster_dict()
    data["nodes"][0]["hostname"] = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(snapshot.from_dict(data).nodes[0].hostname) == 253
    for bad in (".".join(["a" * 63] * 4), "a" * 64 + ".x", "-a.b", "a..b", "a b", "a\n"):
        data["nodes"][0]["hostname"] = bad
        with pytest.raises(snapshot.SnapshotError, match="nodes\\[0\\].hostname"):
            snapshot.from_dict(data)


def test_a_host_mode_port_does_not_claim_the_routing_mesh_port_whatever_the_order():
    data = _cluster_dict()
    taken = data["services"][0]["ports"][0]
    host_mode = {**taken, "publish_mode": "host"}
    data["services"][1]["ports"] = [host_mode]
    for _ in range(2):  # the host-mode service listed after, then before the ingress one
        cluster = snapshot.from_dict(data)
        assert len(cluster.services) == len(data["services"])
        data["services"][0], data["services"][1] = data["services"][1], data["services"][0]


def _address(kind: str, i: int, field: str, j: int, address: str):
    """A mutation setting e.g. services[i].vips[j].address."""
    return lambda d: d[kind][i][field][j].update(address=address)


def _task_state(i: int, **states):
    return lambda d: d["tasks"][i].update(**states)


def _all(*mutations):
    return lambda d: [mutate(d) for mutate in mutations]


# Scenario addresses: network 0 "ingress" 10.255.0.0/16, network 1 "app" 10.0.1.0/24 with LB
# addresses .251 (node1) and .252 (node2); web's VIP is 10.0.1.2, empty's 10.0.1.3; task t1 holds
# 10.0.1.11 and t2 10.0.1.12 on app (tasks[i].addresses[1]), c1 10.0.1.101 (tasks[4].addresses[0]).
@pytest.mark.parametrize("mutate, message", [
    (_address("services", 1, "vips", 0, "10.0.1.2"),
     "services[1].vips[0].address: '10.0.1.2' is already the VIP of 'web' on network 'app'"),
    (_address("services", 1, "vips", 0, "10.0.9.9"),
     "services[1].vips[0].address: '10.0.9.9' is not in network app's subnet 10.0.1.0/24"),
    (_address("services", 0, "vips", 0, "10.0.1.251"),
     "services[0].vips[0].address: '10.0.1.251' is already the load-balancer address of node 'node1' "
     "on network 'app'"),
    (_address("services", 1, "vips", 0, "10.0.1.11"),
     "tasks[0].addresses[1].address: '10.0.1.11' is already the VIP of 'empty' on network 'app'"),
    (lambda d: d["services"][0]["vips"].append({"network_id": "appnet00000001", "address": "10.0.1.50"}),
     "services[0].vips[1].network_id: 'web' already has a VIP on network 'app'"),
    (_address("tasks", 2, "addresses", 0, "10.0.1.13"),
     "tasks[2].addresses[0].address: '10.0.1.13' is not in network ingress's subnet 10.255.0.0/16"),
    (_address("tasks", 1, "addresses", 1, "10.0.1.11"),
     "tasks[1].addresses[1].address: '10.0.1.11' is already the address of task 't1' on network 'app'"),
    (_address("tasks", 4, "addresses", 0, "10.0.1.252"),
     "tasks[4].addresses[0].address: '10.0.1.252' is already the load-balancer address of node 'node2' "
     "on network 'app'"),
    (_address("networks", 1, "lb_addresses", 1, "10.0.2.252"),
     "networks[1].lb_addresses[1].address: '10.0.2.252' is not in network app's subnet 10.0.1.0/24"),
    (_address("networks", 0, "lb_addresses", 1, "10.255.0.2"),
     "networks[0].lb_addresses[1].address: '10.255.0.2' is already the load-balancer address of node "
     "'node1' on network 'ingress'"),
    # A task that failed but is still meant to run keeps its address until swarm gives up on it.
    (_all(_task_state(0, current_state="failed"), _address("tasks", 1, "addresses", 1, "10.0.1.11")),
     "tasks[1].addresses[1].address: '10.0.1.11' is already the address of task 't1' on network 'app'"),
    # A dead task's stale address still has to be an address of its network.
    (_all(_task_state(0, desired_state="shutdown", current_state="shutdown"),
          _address("tasks", 0, "addresses", 1, "10.0.7.1")),
     "tasks[0].addresses[1].address: '10.0.7.1' is not in network app's subnet 10.0.1.0/24"),
])
def test_address_conflicts_are_named(mutate, message):
    data = _cluster_dict()
    mutate(data)
    with pytest.raises(snapshot.SnapshotError) as err:
        snapshot.from_dict(data)
    assert message in str(err.value)


def test_a_dead_task_may_list_an_address_swarm_has_given_to_a_new_task():
    """Swarm frees a task's addresses once it is shut down but keeps them in the task record."""
    data = _cluster_dict()
    data["tasks"][0].update(desired_state="shutdown", current_state="shutdown")
    data["tasks"][1]["addresses"][1]["address"] = data["tasks"][0]["addresses"][1]["address"]
    cluster = snapshot.from_dict(data)
    assert cluster.tasks[1].address_on("appnet00000001") == "10.0.1.11"


def test_not_json_and_missing_file_are_clear(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text("{nope")
    with pytest.raises(snapshot.SnapshotError, match=r"c.json: not JSON"):
        snapshot.load(str(bad))
    with pytest.raises(snapshot.SnapshotError, match=r"missing.json: No such file"):
        snapshot.load(str(tmp_path / "missing.json"))


def test_demo_cluster_file_matches_the_testbed():
    with open("examples/demo-cluster.json", encoding="utf-8") as handle:
        assert json.load(handle) == _cluster_dict()
