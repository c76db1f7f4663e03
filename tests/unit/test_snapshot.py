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
