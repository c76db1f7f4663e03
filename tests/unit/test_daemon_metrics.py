"""The metrics text carries the names, labels and values the daemons set."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingressmesh.daemon.metrics import AgentMetrics, ControllerMetrics


def samples(metrics) -> dict:
    content_type, body = metrics.render()
    assert content_type.startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_agent_metrics():
    m = AgentMetrics()
    m.sync_duration.observe(0.02)
    m.sync_failures.labels(namespace="lb:appnet").inc()
    m.snapshot_version.set(1700000000123)
    m.last_successful_sync.set(1700000000.5)
    m.controller_up.set(1)
    m.set_backends({"web": {"active": 3, "draining": 1}, "api": {"active": 2}})
    s = samples(m)
    assert s[("ingressmesh_sync_duration_seconds_count", ())] == 1
    assert s[("ingressmesh_sync_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert s[("ingressmesh_sync_failures_total", (("namespace", "lb:appnet"),))] == 1
    assert s[("ingressmesh_snapshot_version", ())] == 1700000000123
    assert s[("ingressmesh_last_successful_sync_timestamp_seconds", ())] == 1700000000.5
    assert s[("ingressmesh_controller_up", ())] == 1
    assert s[("ingressmesh_service_backends", (("service", "web"), ("state", "active")))] == 3
    assert s[("ingressmesh_service_backends", (("service", "web"), ("state", "draining")))] == 1
    assert s[("ingressmesh_service_backends", (("service", "api"), ("state", "draining")))] == 0


def test_set_backends_replaces_the_whole_set():
    m = AgentMetrics()
    m.set_backends({"web": {"active": 3}, "old": {"active": 1}})
    m.set_backends({"web": {"active": 2}})
    backends = {k: v for k, v in samples(m).items() if k[0] == "ingressmesh_service_backends"}
    assert backends == {
        ("ingressmesh_service_backends", (("service", "web"), ("state", "active"))): 2,
        ("ingressmesh_service_backends", (("service", "web"), ("state", "draining"))): 0,
    }


def test_set_backends_refuses_an_unknown_state():
    m = AgentMetrics()
    m.set_backends({"web": {"active": 1}})
    with pytest.raises(ValueError, match="'web'.*'gone'"):
        m.set_backends({"web": {"gone": 1}})
    assert samples(m)[("ingressmesh_service_backends", (("service", "web"), ("state", "active")))] == 1


def test_controller_metrics():
    m = ControllerMetrics()
    m.resync_duration.observe(0.3)
    m.resync_failures.labels(endpoint="tasks").inc(2)
    m.last_successful_resync.set(1700000001)
    m.agents_reporting.set(3)
    m.observe_counts(42, {"services": 2, "tasks": 4})
    s = samples(m)
    assert s[("ingressmesh_resync_duration_seconds_count", ())] == 1
    assert s[("ingressmesh_resync_failures_total", (("endpoint", "tasks"),))] == 2
    assert s[("ingressmesh_last_successful_resync_timestamp_seconds", ())] == 1700000001
    assert s[("ingressmesh_agents_reporting", ())] == 3
    assert s[("ingressmesh_snapshot_version", ())] == 42
    assert s[("ingressmesh_snapshot_services", ())] == 2
    assert s[("ingressmesh_snapshot_tasks", ())] == 4


def test_registries_are_per_instance():
    a, b = AgentMetrics(), AgentMetrics()  # a global registry would refuse the second
    a.controller_up.set(1)
    assert samples(b)[("ingressmesh_controller_up", ())] == 0
    assert b"python_gc" not in a.render()[1]  # only our series, no process/platform collectors
