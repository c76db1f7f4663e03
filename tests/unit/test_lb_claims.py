"""A node's report speaks only about its own node (issue 19.1): an lb address it claims that is
another service's VIP, another node's task address or another node's lb address is refused by
name, and the VIP, the task and the other node stay.  Through the real controller and its HTTP
API, with a node credential."""
from __future__ import annotations

import logging
import time

import pytest
import requests

from ingressmesh import model
from ingressmesh.controller import lb_claims
from ingressmesh.controller.merge import SinceTracker, merge
from ingressmesh.daemon.credentials import node_credential, reader_credential
from ingressmesh.swarm.state import SwarmState

from test_controller_reports import _controller
from test_merge import INGRESS, OVL, STATE, WEB, _reports

SECRET = "controller-test-token-0123456789"
NODE1, NODE2 = (next(n for n in STATE.nodes if n.hostname == name) for name in ("node1", "node2"))


@pytest.fixture
def controller():
    ctl = _controller()
    ctl.server.start()
    yield ctl
    ctl.store.close()
    ctl.server.stop()


def _post(ctl, node, report) -> requests.Response:
    headers = {"Authorization": f"Bearer {node_credential(SECRET, node.id)}"}
    return requests.post(ctl.server.url + "/v1/report", json={**report, "sent_at": time.time()},
                         headers=headers, timeout=5)


def _snapshot(ctl) -> dict:
    headers = {"Authorization": f"Bearer {reader_credential(SECRET)}"}
    return requests.get(ctl.server.url + "/v1/snapshot?since=0", headers=headers, timeout=5).json()["cluster"]


def _honest(ctl) -> dict:
    honest = _reports()
    by_id = {n.id: n for n in STATE.nodes}
    for node_id, report in honest.items():
        assert _post(ctl, by_id[node_id], report).status_code == 204
    return honest


def test_a_node_claiming_a_vip_and_another_nodes_task_address_loses_only_its_claim(controller, caplog):
    honest = _honest(controller)
    web_vip = WEB.vip_on(INGRESS.id)
    task = next(t for t in STATE.tasks if t.service_id == WEB.id and t.node_id == NODE2.id)
    hostile = {**honest[NODE1.id], "lb_addresses": {INGRESS.id: web_vip, OVL.id: task.address_on(OVL.id)}}
    with caplog.at_level(logging.ERROR, logger="ingressmesh.controller.app"):
        assert _post(controller, NODE1, hostile).status_code == 204
    cluster = _snapshot(controller)
    web = next(s for s in cluster["services"] if s["id"] == WEB.id)
    assert {"network_id": INGRESS.id, "address": web_vip} in web["vips"]  # the VIP stays in service
    assert task.id in {t["id"] for t in cluster["tasks"]}  # and so does node2's task
    networks = {n["id"]: n for n in cluster["networks"]}
    for network in (INGRESS, OVL):
        holders = {a["node_id"]: a["address"] for a in networks[network.id]["lb_addresses"]}
        assert NODE1.id not in holders  # node1's claims are refused...
        assert holders[NODE2.id] == honest[NODE2.id]["lb_addresses"][network.id]  # ...nobody else's
    refused = [r for r in cluster["refused"] if "load-balancer address" in r]
    assert len(refused) == 2 and all(f"node 'node1' ({NODE1.id})" in r for r in refused)
    assert any(web_vip in r and "VIP of service 'web'" in r for r in refused)
    assert any(task.address_on(OVL.id) in r and f"task {task.id!r}" in r for r in refused)
    health = requests.get(controller.server.url + "/healthz", timeout=5).json()
    assert set(refused) <= set(health["refused"])
    metrics = requests.get(controller.server.url + "/metrics", timeout=5).text
    assert f'ingressmesh_refused_lb_claims{{node="{NODE1.id}"}} 2.0' in metrics
    assert sum(f"node 'node1' ({NODE1.id})" in r.getMessage() for r in caplog.records) == 2


def test_the_node_that_claimed_an_address_first_keeps_it(controller):
    honest = _honest(controller)
    taken = honest[NODE2.id]["lb_addresses"][OVL.id]
    hostile = {**honest[NODE1.id], "lb_addresses": {**honest[NODE1.id]["lb_addresses"], OVL.id: taken}}
    assert _post(controller, NODE1, hostile).status_code == 204
    ovl = next(n for n in _snapshot(controller)["networks"] if n["id"] == OVL.id)
    assert {"node_id": NODE2.id, "address": taken} in ovl["lb_addresses"]
    assert NODE1.id not in {a["node_id"] for a in ovl["lb_addresses"]}
    (refusal,) = [r for r in controller.refused if "load-balancer address" in r]
    assert f"node 'node1' ({NODE1.id})" in refusal and f"node {NODE2.id!r} claimed it first" in refusal
    # node2 re-sending its address keeps its first claim: still node2's
    assert _post(controller, NODE2, {**honest[NODE2.id], "containers": {}}).status_code == 204
    ovl = next(n for n in _snapshot(controller)["networks"] if n["id"] == OVL.id)
    assert {"node_id": NODE2.id, "address": taken} in ovl["lb_addresses"]


# --- the rule itself, on hand-built states ---------------------------------------------------------

NODES = (model.Node("n1", "node1", "192.168.0.1"), model.Node("n2", "node2", "192.168.0.2"))
ING = model.Network("ing", "ingress", "10.0.0.0/24", ingress=True)
APP = model.Network("app", "app", "10.1.0.0/24")


def _state(tasks=(), attachments=frozenset()) -> SwarmState:
    return SwarmState(NODES, (ING, APP), (model.Service("s", "svc", vips=(model.VirtualIP("app", "10.1.0.2"),)),),
                      tuple(tasks), attachments=attachments)


def test_a_node_without_a_task_on_a_network_has_no_endpoint_there():
    task = model.Task("t", "s", "n2", addresses=(model.NetworkAddress("app", "10.1.0.9"),))
    reports = {"n1": {"lb_addresses": {"app": "10.1.0.50", "ing": "10.0.0.50"}},
               "n2": {"lb_addresses": {"app": "10.1.0.51"}}}
    claims = lb_claims.judge(_state([task]), reports)
    assert claims.accepted == {"ing": (model.NodeAddress("n1", "10.0.0.50"),),
                               "app": (model.NodeAddress("n2", "10.1.0.51"),)}
    (refusal,) = claims.refused
    assert "node 'node1' (n1)" in refusal and "no load-balancer endpoint" in refusal
    # a standalone container's attachment (no service task) gives the node its endpoint
    assert lb_claims.judge(_state([task], frozenset({("n1", "app")})), reports).refused == ()


def test_a_dead_task_frees_its_address_and_a_starting_one_holds_it():
    reports = {"n1": {"lb_addresses": {"ing": "10.0.0.9"}}}
    starting = model.Task("t", "s", "n2", current_state="starting", addresses=(model.NetworkAddress("ing", "10.0.0.9"),))
    dead = model.Task("t", "s", "n2", desired_state="shutdown", current_state="failed",
                      addresses=(model.NetworkAddress("ing", "10.0.0.9"),))
    assert "task 't'" in lb_claims.judge(_state([starting]), reports).refused[0]
    assert lb_claims.judge(_state([dead]), reports).accepted == {"ing": (model.NodeAddress("n1", "10.0.0.9"),)}


def test_claims_made_at_the_same_time_are_all_refused_and_the_stamp_keeps_the_first():
    reports = {"n1": {"lb_addresses": {"ing": "10.0.0.9"}}, "n2": {"lb_addresses": {"ing": "10.0.0.9"}}}
    assert len(lb_claims.judge(_state(), reports).refused) == 2
    first = lb_claims.stamp(reports["n2"], None, 1.0)
    again = lb_claims.stamp(reports["n2"], first, 5.0)
    assert again[lb_claims.CLAIMED_AT] == {"ing": 1.0}
    later = lb_claims.stamp(reports["n1"], None, 2.0)
    claims = lb_claims.judge(_state(), {"n1": later, "n2": again})
    assert claims.accepted == {"ing": (model.NodeAddress("n2", "10.0.0.9"),)} and claims.refused_nodes == ("n1",)


def test_the_merge_never_drops_a_vip_for_a_node_claim():
    reports = {"n1": {"lb_addresses": {"app": "10.1.0.2"}}}
    merged = merge(_state(attachments=frozenset({("n1", "app")})), reports, SinceTracker(), 1.0)
    assert [s.id for s in merged.cluster.services] == ["s"]
    assert merged.refused and "VIP of service 'svc'" in merged.refused[0]


def test_the_manager_is_asked_for_standalone_containers_attachments_too():
    from ingressmesh.swarm.state import read_swarm

    from test_merge import DATA
    from test_swarm_convert import RecordedApi
    attachment = {"ID": "att1", "NodeID": NODE2.id, "DesiredState": "running", "Status": {"State": "running"},
                  "Spec": {"NetworkAttachmentSpec": {"ContainerID": "c0ffee"}},
                  "NetworksAttachments": [{"Network": {"ID": "solo-net"}, "Addresses": ["10.9.0.3/24"]}]}
    dead = {**attachment, "ID": "att0", "NodeID": NODE1.id, "DesiredState": "shutdown", "Status": {"State": "complete"}}

    class WithAttachments(RecordedApi):
        def tasks(self, filters=None):  # like a manager: attachment tasks only when asked by runtime
            return [attachment, dead] if filters == {"runtime": "attachment"} else super().tasks()
    state = read_swarm(WithAttachments(DATA))
    assert (NODE2.id, "solo-net") in state.attachments and (NODE1.id, "solo-net") not in state.attachments
    assert read_swarm(RecordedApi(DATA)).attachments == state.attachments - {(NODE2.id, "solo-net")}
