"""A report is about its own node: the real controller server on loopback refuses a node's
credential reporting for another node (403, naming why), a reader's report, and forged
credentials; the cluster secret keeps full access."""
from __future__ import annotations

import pytest
import requests

from ingressmesh.agent.controller_client import ControllerAuthError, ControllerClient
from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.credentials import node_credential, reader_credential
from ingressmesh.daemon.metrics import ControllerMetrics
from ingressmesh.report_digest import report_digest

SECRET = "credentials-test-cluster-secret-0123"
CLUSTER = {"nodes": [], "services": []}


def report(node_id: str) -> dict:
    return {"node_id": node_id, "containers": {"t1": {"health": "healthy", "stopping": True}},
            "lb_addresses": {}, "sent_at": 1700000000.0}


@pytest.fixture
def ctl():
    store = SnapshotStore()
    store.publish(CLUSTER)
    reports: list = []
    server = ControllerServer(store, reports.append, SECRET, ControllerMetrics(), ("127.0.0.1", 0)).start()
    server.reports = reports
    yield server
    store.close()
    server.stop()


def _post(ctl, token, body):
    return requests.post(ctl.url + "/v1/report", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=5)


def _get(ctl, token):
    return requests.get(ctl.url + "/v1/snapshot", headers={"Authorization": f"Bearer {token}"}, timeout=5)


def test_a_node_reports_for_itself_only(ctl):
    own = node_credential(SECRET, "n1")
    assert _post(ctl, own, report("n1")).status_code == 204
    response = _post(ctl, own, report("n2"))  # would drain n2's tasks everywhere
    assert response.status_code == 403
    assert response.json()["error"] == "report refused: the credential of node 'n1' may not report for node 'n2'"
    assert ctl.reports == [{**report("n1"), "digest": report_digest(report("n1"))}]


def test_every_credential_reads_the_snapshot(ctl):
    for token in (SECRET, node_credential(SECRET, "n1"), reader_credential(SECRET)):
        response = _get(ctl, token)
        assert response.status_code == 200 and response.json()["cluster"] == CLUSTER


def test_a_reader_may_not_report(ctl):
    response = _post(ctl, reader_credential(SECRET), report("n1"))
    assert response.status_code == 403 and "read-only" in response.json()["error"]
    assert ctl.reports == []


def test_the_cluster_secret_reports_for_any_node(ctl):
    assert _post(ctl, SECRET, report("n1")).status_code == 204
    assert _post(ctl, SECRET, report("n2")).status_code == 204
    assert [r["node_id"] for r in ctl.reports] == ["n1", "n2"]


@pytest.mark.parametrize("token", [
    node_credential("some-other-cluster-secret-0000", "n1"),  # another cluster's
    node_credential(SECRET, "n1").replace("node:n1:", "node:n2:"),  # n1's MAC with n2's id
    reader_credential("some-other-cluster-secret-0000"),
])
def test_forged_credentials_are_refused(ctl, token):
    for response in (_get(ctl, token), _post(ctl, token, report("n2"))):
        assert response.status_code == 401 and response.json()["error"] == "wrong bearer token"
    assert ctl.reports == []


def test_the_agent_client_names_the_refusal(ctl):
    client = ControllerClient([ctl.url], node_credential(SECRET, "n1"))
    try:
        assert client.follow(0, 1)[1] == CLUSTER
        assert client.report(report("n1")).accepted == [ctl.url]
        with pytest.raises(ControllerAuthError, match="refused the credential: report refused: the credential "
                                                      "of node 'n1' may not report for node 'n2'"):
            client.report(report("n2"))
    finally:
        client.close()
