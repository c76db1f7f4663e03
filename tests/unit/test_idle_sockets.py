"""2,000 idle sockets from the agent's own address must not lock the agent out (issue 19.2).

A separate process opens 2,000 TCP connections to a real controller server on loopback, sends
nothing, and re-opens each one the server closes, for 8 s.  Meanwhile an agent-like client
follows the snapshot by long-poll and posts a report every 0.3 s on a fresh connection
(idle_flood.agent_problems says what must hold).  The same from several addresses, in a network
namespace: tests/kernel/test_idle_sockets_netns.py.
"""
from __future__ import annotations

import json
import resource

import pytest

from ingressmesh.controller.server import ControllerServer
from ingressmesh.controller.store import SnapshotStore
from ingressmesh.daemon.http_limits import Limits
from ingressmesh.daemon.metrics import ControllerMetrics
from ingressmesh.testbed.idle_flood import AgentProbe, agent_problems, probe_while_publishing, start_flood

TOKEN = "idle-sockets-token-0123456789"
REPORT = {"node_id": "n1", "containers": {}, "lb_addresses": {}}


@pytest.fixture
def descriptors():
    """The server's side of up to 1,024 connections plus the client's sockets: past a 1024 default."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timing
def test_2000_idle_sockets_from_the_agents_own_address(descriptors):
    store = SnapshotStore()
    store.publish({"step": "start"})
    reports = []
    server = ControllerServer(store, reports.append, TOKEN, ControllerMetrics(), ("127.0.0.1", 0)).start()
    try:
        flood, ready = start_flood([], f"127.0.0.1:{server.port}", ["127.0.0.1"])
        try:
            assert ready.get("open", 0) >= 1900  # the kernel completed them; the server took them in
            probe = AgentProbe(server.url, TOKEN, REPORT)
            published = probe_while_publishing(probe, lambda i: store.publish({"step": i}))
            # What one address holds at most: its 16 silent ones and those younger than the 1 s
            # grace (the flood's rate), never past the per-address cap
            assert server.http.connections <= Limits().max_per_client
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
