"""The controller's report map: written by request threads while merges and /healthz read it,
and reports of nodes that left the swarm dropped."""
from __future__ import annotations

import dataclasses
import threading

from ingressmesh.controller.app import Controller, ControllerConfig

from test_merge import STATE, _reports


class StubProvider:
    """What the controller asks its provider for, without Docker."""

    def __init__(self, state):
        self.state, self.last_error, self.last_success = state, "", None
        self.pokes, self.busy_pokes = 0, 0

    def poke(self, full=False, busy=False):
        self.pokes += 1
        self.busy_pokes += busy


def _controller():
    controller = Controller(ControllerConfig(listen=("127.0.0.1", 0)), "controller-test-token-0123456789")
    controller.provider = StubProvider(STATE)
    return controller


def test_reports_written_while_health_and_merges_read_them():
    controller = _controller()
    try:
        reports = _reports()
        errors, stop = [], threading.Event()

        def writer(node_id, report):
            for i in range(150):  # a new node id each time: the map grows (and departed ones go)
                controller._on_report({**report, "node_id": f"{node_id}-{i}", "sent_at": float(i)})

        def reader():
            while not stop.is_set():
                try:
                    controller._health()
                except Exception as err:  # noqa: BLE001 - what the test is looking for
                    errors.append(err)
        threads = [threading.Thread(target=writer, args=(f"{node_id}-{k}", report))
                   for k in range(4) for node_id, report in reports.items()]
        readers = [threading.Thread(target=reader) for _ in range(2)]
        for t in readers + threads:
            t.start()
        for t in threads:
            t.join(60)
        stop.set()
        for t in readers:
            t.join(10)
        assert errors == []
    finally:
        controller.store.close()
        controller.server.stop()


def test_reports_of_nodes_that_left_are_dropped():
    controller = _controller()
    try:
        reports = _reports()
        for report in reports.values():
            controller._on_report(report)
        assert set(controller._reports()) == {n.id for n in STATE.nodes}
        gone = sorted(STATE.nodes, key=lambda n: n.hostname)[-1]
        controller.provider.state = dataclasses.replace(
            STATE, nodes=tuple(n for n in STATE.nodes if n.id != gone.id),
            tasks=tuple(t for t in STATE.tasks if t.node_id != gone.id))
        controller.publish()
        assert gone.id not in controller._reports() and gone.id not in controller._health()[1]["agents"]
    finally:
        controller.store.close()
        controller.server.stop()


def test_heartbeats_by_digest_cost_no_merge_and_a_restarted_controller_gets_the_whole_report():
    import time

    import requests

    from ingressmesh.agent.controller_client import ControllerClient
    from ingressmesh.agent.reporter import Reporter
    controller = _controller()
    controller.server.start()
    node_id, report = next(iter(_reports().items()))
    sent = []
    client = ControllerClient([controller.server.url], "controller-test-token-0123456789")
    real_report_to = client.report_to
    client.report_to = lambda index, body: (sent.append(body), real_report_to(index, body))[1]
    reporter = Reporter(client, lambda: {**report, "sent_at": time.time()}, heartbeat=0.1).start()
    try:
        reporter.changed()
        deadline = time.monotonic() + 5
        while len(sent) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        held = controller.reports[node_id]
        assert "containers" in sent[0] and all(set(b) == {"node_id", "same_as", "sent_at"} for b in sent[1:6])
        assert controller.reports[node_id] is held and time.monotonic() - controller.heard[node_id] < 1
        with controller._reports_lock:  # as if the controller restarted: it holds no report
            controller.reports.clear()
        deadline = time.monotonic() + 5
        while node_id not in controller.reports and time.monotonic() < deadline:
            time.sleep(0.02)
        assert controller.reports[node_id]["digest"] == held["digest"]  # the whole report came back
        answer = requests.post(controller.server.url + "/v1/report", timeout=5,
                               headers={"Authorization": "Bearer controller-test-token-0123456789"},
                               json={"node_id": node_id, "same_as": "f" * 64, "sent_at": 1.0})
        assert answer.status_code == 409 and "send it whole" in answer.json()["error"]
        answer = requests.post(controller.server.url + "/v1/report", timeout=5,
                               headers={"Authorization": "Bearer controller-test-token-0123456789"},
                               json={"node_id": node_id, "same_as": "not hex", "sent_at": 1.0})
        assert answer.status_code == 400 and answer.json()["error"].startswith("report: same_as:")
    finally:
        reporter.stop()
        client.close()
        controller.store.close()
        controller.server.stop()


def test_a_task_turning_healthy_pokes_the_provider_busy():
    """Swarm moves a health-checked task to running only after its node saw it healthy: the
    report saying so must make the controller re-read the task list soon, and keep reading."""
    from test_merge import _web_tasks
    controller = _controller()
    try:
        task = _web_tasks()[0]
        controller._on_report({**_reports(**{task.id: {"health": "starting"}})[task.node_id], "sent_at": 1.0})
        pokes = controller.provider.pokes
        controller._on_report({**_reports(**{task.id: {"health": "starting"}})[task.node_id], "sent_at": 2.0})
        assert controller.provider.pokes == pokes  # nothing changed: no read
        controller._on_report({**_reports(**{task.id: {"health": "healthy"}})[task.node_id], "sent_at": 3.0})
        assert controller.provider.pokes == pokes + 1 and controller.provider.busy_pokes >= 1
    finally:
        controller.store.close()
        controller.server.stop()
