"""2,000 idle sockets from twenty addresses must not lock an agent out (issue 19.2).

In a network namespace of its own with twenty-one addresses on its loopback device: a real
controller server listens on the first, a separate process opens 2,000 idle TCP connections
from the other twenty (100 each: more than the 256 pending connections allowed in all) and
re-opens each one the server closes, for 8 s, while an agent-like client follows the snapshot
and posts a report every 0.3 s on a fresh connection (idle_flood.agent_problems says what must
hold).  Loopback-only variant: tests/unit/test_idle_sockets.py.
"""
from __future__ import annotations

import json
import resource

import pytest

from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.metrics import ControllerMetrics
from ingressmesh.testbed.idle_flood import AgentProbe, agent_problems, probe_while_publishing, start_flood

TOKEN = "idle-sockets-token-0123456789"
REPORT = {"node_id": "n1", "containers": {}, "lb_addresses": {}}
SERVER = "10.250.0.1"
SOURCES = [f"10.250.0.{i}" for i in range(2, 22)]


@pytest.fixture
def addressed(scratch):
    scratch.run(["ip", "link", "set", "lo", "up"])
    for address in [SERVER, *SOURCES]:  # on lo: local to each other, no device module needed
        scratch.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield scratch
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timing
def test_2000_idle_sockets_from_twenty_addresses(addressed):
    store = SnapshotStore()
    store.publish({"step": "start"})
    reports = []
    with addressed.entered():  # the listening socket lives in the namespace
        server = ControllerServer(store, reports.append, TOKEN, ControllerMetrics(), (SERVER, 0))
    server.start()

    def inside(body):
        with addressed.entered():
            body()
    try:
        flood, ready = start_flood(addressed.command([]), f"{SERVER}:{server.port}", SOURCES)
        try:
            assert ready.get("open", 0) >= 1900
            probe = AgentProbe(server.url, TOKEN, REPORT, wrap=inside)
            published = probe_while_publishing(probe, lambda i: store.publish({"step": i}))
        finally:
            flood.wait(timeout=30)
        done = json.loads(flood.stdout.readline())
        flood.stdout.close()
    finally:
        store.close()
        server.stop()
    assert agent_problems(probe, published) == []
    assert done["closed_by_server"] >= 1000 and server.http.gate.evicted >= 1000  # the pressure was real
    assert len(reports) == len(probe.reports)
