"""A report older than the last one accepted from its node is refused (issue 19.3): a replay or a
delayed request gets 409 and changes nothing; a node whose wall clock jumps back, or that
rebooted with its clock behind, is not locked out.  Through the real controller's HTTP API."""
from __future__ import annotations

import time

import pytest
import requests

from ingressmesh.agent.controller_client import ControllerClient
from ingressmesh.agent.reporter import Reporter
from ingressmesh.controller.report_order import ReportOrder
from ingressmesh.daemon.credentials import node_credential
from ingressmesh.report_sequence import boot_id, sequence

from test_controller_reports import _controller
from test_merge import STATE, _reports

SECRET = "controller-test-token-0123456789"
NODE = STATE.nodes[0]
BOOT = "0b5e55ed-0000-4000-8000-000000000001"


@pytest.fixture
def controller():
    ctl = _controller()
    ctl.server.start()
    yield ctl
    ctl.store.close()
    ctl.server.stop()


def _post(ctl, body: dict) -> requests.Response:
    headers = {"Authorization": f"Bearer {node_credential(SECRET, NODE.id)}"}
    return requests.post(ctl.server.url + "/v1/report", json=body, headers=headers, timeout=5)


def _report(health: str, ns: int, sent_at: float, boot: str = BOOT) -> dict:
    task = next(t for t in STATE.tasks if t.node_id == NODE.id)
    report = _reports(**{task.id: {"health": health, "stopping": False}})[NODE.id]
    return {**report, "sent_at": sent_at, "seq": {"boot": boot, "ns": ns}}


def _health(ctl) -> str:
    return next(iter(ctl.reports[NODE.id]["containers"].values()))["health"]


def test_a_replayed_report_is_refused_and_changes_nothing(controller):
    old = _report("healthy", ns=1_000, sent_at=1000.0)
    assert _post(controller, old).status_code == 204
    assert _post(controller, _report("unhealthy", ns=2_000, sent_at=1001.0)).status_code == 204
    answer = _post(controller, old)  # replayed (or delayed): it would bring the task back
    assert answer.status_code == 409 and "older than the last report accepted" in answer.json()["error"]
    assert _health(controller) == "unhealthy"
    heartbeat = {"node_id": NODE.id, "same_as": controller.reports[NODE.id]["digest"], "sent_at": 1000.0,
                 "seq": {"boot": BOOT, "ns": 1_500}}
    assert _post(controller, heartbeat).status_code == 409  # an old heartbeat does not count as heard
    metrics = requests.get(controller.server.url + "/metrics", timeout=5).text
    assert f'ingressmesh_refused_reports_total{{node="{NODE.id}"}} 2.0' in metrics


def test_a_wall_clock_that_jumps_back_does_not_lock_the_node_out(controller):
    assert _post(controller, _report("healthy", ns=1_000, sent_at=2_000_000_000.0)).status_code == 204
    # NTP stepped the clock back a year: the boot clock still moves forward
    assert _post(controller, _report("unhealthy", ns=1_001, sent_at=1_970_000_000.0)).status_code == 204
    assert _health(controller) == "unhealthy"


def test_a_report_from_an_earlier_boot_is_refused_while_the_node_reports_and_a_reboot_gets_in(controller):
    controller.order = ReportOrder(reboot_quiet=0.3)
    assert _post(controller, _report("healthy", ns=5_000, sent_at=2000.0)).status_code == 204
    replay = _report("unhealthy", ns=9_000_000, sent_at=1990.0, boot="0b5e55ed-0000-4000-8000-0000000000aa")
    answer = _post(controller, replay)
    assert answer.status_code == 409 and "replayed" in answer.json()["error"]
    assert _health(controller) == "healthy"
    # A real reboot with the clock behind: nothing accepted from the node for the quiet time
    time.sleep(0.35)
    assert _post(controller, replay).status_code == 204 and _health(controller) == "unhealthy"


def test_the_agent_stamps_each_post_and_keeps_reporting_past_a_replay(controller):
    report = _report("healthy", ns=0, sent_at=time.time())
    del report["seq"]
    client = ControllerClient([controller.server.url], node_credential(SECRET, NODE.id))
    reporter = Reporter(client, lambda: {**report, "sent_at": time.time()}, heartbeat=0.05).start()
    try:
        reporter.changed()
        deadline = time.monotonic() + 5
        while NODE.id not in controller.reports and time.monotonic() < deadline:
            time.sleep(0.02)
        first = dict(controller.reports[NODE.id])
        assert first["seq"]["boot"] == boot_id() and first["seq"]["ns"] <= sequence()["ns"]
        replay = {k: v for k, v in first.items() if k not in ("digest", "lb_claimed_at")}
        time.sleep(0.2)  # heartbeats with newer stamps were accepted meanwhile
        assert _post(controller, replay).status_code == 409
        heard = controller.heard[NODE.id]
        deadline = time.monotonic() + 5
        while controller.heard[NODE.id] == heard and time.monotonic() < deadline:
            time.sleep(0.02)
        assert controller.heard[NODE.id] > heard and not reporter.errors  # the agent carries on
    finally:
        reporter.stop()
        client.close()


def test_a_malformed_seq_is_refused_by_name(controller):
    answer = _post(controller, {**_report("healthy", 1, 1.0), "seq": {"boot": "x y", "ns": 1}})
    assert answer.status_code == 400 and answer.json()["error"].startswith("report: seq.boot:")
    answer = _post(controller, {**_report("healthy", 1, 1.0), "seq": {"boot": BOOT, "ns": -1}})
    assert answer.status_code == 400 and answer.json()["error"].startswith("report: seq.ns:")
