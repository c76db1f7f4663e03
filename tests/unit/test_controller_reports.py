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
        self.pokes = 0

    def poke(self):
        self.pokes += 1


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
