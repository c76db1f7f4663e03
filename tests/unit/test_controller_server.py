"""The controller API on a real socket: long-poll, auth, report validation, health, metrics."""
from __future__ import annotations

import copy
import threading
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ingressmesh.controller.server import ControllerServer, ReportError, validate_report
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.metrics import ControllerMetrics
from ingressmesh.report_digest import report_digest

TOKEN = "controller-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLUSTER = {"nodes": [{"id": "n1", "hostname": "node1", "address": "10.9.0.1"}], "services": []}
REPORT = {"node_id": "n1",
          "containers": {"t1": {"health": "healthy", "stopping": False},
                         "t2": {"health": "starting", "stopping": True}},
          "lb_addresses": {"appnet": "10.0.1.2"},
          "sent_at": 1700000000.25}


class Controller:
    def __init__(self):
        self.store = SnapshotStore()
        self.reports: list = []
        self.healthy = (True, {"resync_age": 1.5})
        self.metrics = ControllerMetrics()
        self.server = ControllerServer(self.store, self.reports.append, TOKEN, self.metrics,
                                       ("127.0.0.1", 0), health=lambda: self.healthy).start()
        self.url = self.server.url

    def get(self, path, **kwargs):
        return requests.get(self.url + path, headers=AUTH, timeout=10, **kwargs)


@pytest.fixture
def ctl():
    c = Controller()
    yield c
    c.store.close()
    c.server.stop()


def test_long_poll_returns_at_once_when_newer(ctl):
    v = ctl.store.publish(CLUSTER)
    start = time.monotonic()
    response = ctl.get("/v1/snapshot", params={"since": v - 1, "wait": 20})
    assert response.status_code == 200 and time.monotonic() - start < 1
    assert response.json() == {"version": v, "epoch": ctl.store.epoch, "cluster": CLUSTER}


def test_long_poll_blocks_then_304(ctl):
    v = ctl.store.publish(CLUSTER)
    start = time.monotonic()
    response = ctl.get("/v1/snapshot", params={"since": v, "wait": 0.3})
    assert response.status_code == 304 and response.content == b""
    assert 0.29 <= time.monotonic() - start < 3


def test_long_poll_wakes_when_a_snapshot_is_published_mid_wait(ctl):
    v = ctl.store.publish(CLUSTER)
    newer = copy.deepcopy(CLUSTER)
    newer["nodes"].append({"id": "n2", "hostname": "node2", "address": "10.9.0.2"})
    timer = threading.Timer(0.3, ctl.store.publish, args=(newer,))
    timer.start()
    start = time.monotonic()
    response = ctl.get("/v1/snapshot", params={"since": v, "wait": 20})
    elapsed = time.monotonic() - start
    timer.join()
    assert response.status_code == 200 and response.json() == {"version": v + 1, "epoch": ctl.store.epoch,
                                                                "cluster": newer}
    assert 0.25 <= elapsed < 5


def test_wait_is_capped(ctl, monkeypatch):
    seen = []

    async def wait(since, timeout):
        seen.append(timeout)
    monkeypatch.setattr(ctl.server.longpoll, "wait", wait)
    assert ctl.get("/v1/snapshot", params={"since": 1, "wait": 3600}).status_code == 304
    assert seen == [30.0]


@pytest.mark.parametrize("params, field", [({"since": "abc"}, "since"), ({"wait": "-1"}, "wait"),
                                           ({"wait": "nan"}, "wait"), ({"wait": "soon"}, "wait")])
def test_bad_query_is_named(ctl, params, field):
    response = ctl.get("/v1/snapshot", params=params)
    assert response.status_code == 400 and response.json()["error"].startswith(field + ":")


@pytest.mark.parametrize("headers, problem", [({}, "missing"), ({"Authorization": "Bearer nope-nope-nope-nope"}, "wrong")])
def test_v1_refused_without_the_token_while_healthz_and_metrics_work(ctl, headers, problem):
    ctl.store.publish(CLUSTER)
    for method, path in (("GET", "/v1/snapshot"), ("POST", "/v1/report")):
        response = requests.request(method, ctl.url + path, json=REPORT, headers=headers, timeout=5)
        assert response.status_code == 401 and problem in response.json()["error"]
    assert ctl.reports == []
    assert requests.get(ctl.url + "/healthz", timeout=5).status_code == 200
    assert requests.get(ctl.url + "/metrics", timeout=5).status_code == 200


def test_report_is_validated_and_handed_over(ctl):
    response = requests.post(ctl.url + "/v1/report", json={**REPORT, "future_field": 1}, headers=AUTH, timeout=5)
    assert response.status_code == 204 and response.content == b""
    assert ctl.reports == [{**REPORT, "digest": report_digest(REPORT)}]  # unknown fields dropped


@pytest.mark.parametrize("change, field", [
    ({"node_id": 7}, "node_id"),
    ({"node_id": ""}, "node_id"),
    ({"containers": []}, "containers"),
    ({"containers": {"t1": {"health": "great", "stopping": False}}}, "containers['t1'].health"),
    ({"containers": {"t1": {"health": "healthy"}}}, "containers['t1'].stopping: missing"),
    ({"containers": {"t1": {"health": "healthy", "stopping": "no"}}}, "containers['t1'].stopping"),
    ({"containers": {"t1": "healthy"}}, "containers['t1']"),
    ({"lb_addresses": {"appnet": "10.0.1.300"}}, "lb_addresses['appnet']"),
    ({"lb_addresses": {"appnet": "fe80::1"}}, "lb_addresses['appnet']"),
    ({"sent_at": "now"}, "sent_at"),
    ({"sent_at": True}, "sent_at"),
])
def test_malformed_report_names_the_field(ctl, change, field):
    response = requests.post(ctl.url + "/v1/report", json={**REPORT, **change}, headers=AUTH, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"report: {field}")
    assert ctl.reports == []


@pytest.mark.parametrize("missing", ["node_id", "containers", "lb_addresses", "sent_at"])
def test_missing_report_field(missing):
    with pytest.raises(ReportError, match=f"^{missing}: missing"):
        validate_report({k: v for k, v in REPORT.items() if k != missing})


def test_report_not_an_object(ctl):
    response = requests.post(ctl.url + "/v1/report", json=[1], headers=AUTH, timeout=5)
    assert response.status_code == 400 and "expected a JSON object, got a list" in response.json()["error"]


def test_on_report_may_refuse(ctl):
    def refuse(report):
        raise ReportError(f"node_id: {report['node_id']!r} is not in the swarm")
    ctl.server._on_report = refuse
    response = requests.post(ctl.url + "/v1/report", json=REPORT, headers=AUTH, timeout=5)
    assert response.status_code == 400 and "not in the swarm" in response.json()["error"]


def test_healthz(ctl):
    v = ctl.store.publish(CLUSTER)
    response = requests.get(ctl.url + "/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "snapshot_version": v, "resync_age": 1.5}
    ctl.healthy = (False, {"problem": "last swarm resync 400 s ago"})
    response = requests.get(ctl.url + "/healthz", timeout=5)
    assert response.status_code == 503 and response.json()["problem"] == "last swarm resync 400 s ago"


def test_default_health_waits_for_a_snapshot():
    store = SnapshotStore()
    server = ControllerServer(store, lambda r: None, TOKEN, ControllerMetrics(), ("127.0.0.1", 0)).start()
    try:
        response = requests.get(server.url + "/healthz", timeout=5)
        assert response.status_code == 503 and response.json()["snapshot_version"] is None
        store.publish(CLUSTER)
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        server.stop()


def test_metrics(ctl):
    ctl.metrics.observe_counts(ctl.store.publish(CLUSTER), ctl.store.counts())
    response = requests.get(ctl.url + "/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    values = {s.name: s.value for f in text_string_to_metric_families(response.text) for s in f.samples}
    assert values["ingressmesh_snapshot_version"] == ctl.store.version
    assert values["ingressmesh_snapshot_services"] == 0
