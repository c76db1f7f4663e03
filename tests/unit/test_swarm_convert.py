"""The provider's conversion of real Docker API answers (recorded from a lab swarm) into the model."""
import json
import pathlib

import pytest

from ingressmesh.swarm import convert
from ingressmesh.swarm.local import container_health, lb_endpoint_address
from ingressmesh.swarm.state import read_swarm, read_tasks

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "swarm_api.json").read_text())


class RecordedApi:
    """Answers like docker.APIClient from the recording; `tasks` can be swapped to simulate change."""

    def __init__(self, data):
        self.data = data

    def nodes(self):
        return self.data["nodes"]

    def networks(self):
        return self.data["networks"]

    def services(self):
        return self.data["services"]

    def tasks(self):
        return self.data["tasks"]


def test_read_swarm_converts_every_object_and_refuses_bad_services_by_name():
    state = read_swarm(RecordedApi(DATA))
    assert sorted(n.hostname for n in state.nodes) == ["node1", "node2", "node3"]
    assert {n.name: n.ingress for n in state.networks} == {"ingress": True, "ovl": False}
    assert sorted(s.name for s in state.services) == ["bad2", "lab", "web"]
    assert sorted(state.errors) == [
        "service 'absurd': ports[0].published_port: 70000 is not a port (1-65535)",
        "service 'absurd2': ports[0].target_port: None is not a port (1-65535)",
        "service 'absurd3': ports[0].target_port: 99999 is not a port (1-65535)",
    ]
    web = next(s for s in state.services if s.name == "web")
    assert [(p.protocol, p.published_port, p.target_port, p.publish_mode) for p in web.ports] == \
        [("tcp", 8080, 80, "ingress")]
    ovl = next(n for n in state.networks if n.name == "ovl")
    assert web.vip_on(ovl.id) == "10.200.1.2"
    assert web.id in state.health_checked and len(state.health_checked) == 1
    # A task not yet scheduled to a node (absurd's) holds no place in the mesh.
    assert len(state.tasks) == 7 and all(t.node_id for t in state.tasks)
    web_tasks = [t for t in state.tasks if t.service_id == web.id]
    assert len(web_tasks) == 3 and all(t.address_on(ovl.id) for t in web_tasks)
    assert all(t.since > 1.7e9 for t in web_tasks)


def test_bad2_port_was_allocated_by_swarm():
    bad2 = next(s for s in read_swarm(RecordedApi(DATA)).services if s.name == "bad2")
    assert bad2.ports[0].published_port == 30000  # `-p 0:80`: swarm picked one, Endpoint.Ports says which


def test_read_tasks_keeps_everything_else():
    state = read_swarm(RecordedApi(DATA))
    data = dict(DATA, tasks=[t for t in DATA["tasks"] if t["ServiceID"] != state.services[0].id])
    again = read_tasks(RecordedApi(data), state)
    assert again.services == state.services and again.errors == state.errors
    assert len(again.tasks) < len(state.tasks)


def test_timestamps_with_nanoseconds():
    assert convert.parse_timestamp("2026-11-26T15:07:52.728502684Z") == pytest.approx(1795705672.728502, abs=1e-5)
    assert convert.parse_timestamp("") == 0.0 and convert.parse_timestamp("garbage") == 0.0


def test_manager_with_unspecified_status_address_uses_its_raft_address():
    node = {"ID": "n1", "Description": {"Hostname": "m"}, "Spec": {"Role": "manager"},
            "Status": {"State": "ready", "Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "10.77.0.1:2377"}}
    assert convert.convert_node(node).address == "10.77.0.1"


def test_local_facts_parsers():
    inspected = DATA["node_inspect"]
    healths = sorted(container_health(c) for c in inspected.values())
    assert healths == ["healthy", "none", "none"]
    by_name = {n["Name"]: lb_endpoint_address(n) for n in DATA["node_networks"]}
    assert by_name == {"ingress": "10.200.0.4", "ovl": "10.200.1.6"}
