"""SyncHealth (ingressmesh/agent/sync_health.py) with a fake clock."""
from __future__ import annotations

from ingressmesh.agent.sync_health import SyncHealth


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_healthy_until_a_received_version_stays_unapplied_past_the_deadline():
    clock = Clock()
    health = SyncHealth(clock, apply_deadline=10)
    health.controller_ok()
    assert health.status()[0] is True
    health.received(5)
    clock.now += 10
    ok, body = health.status()
    assert ok and body["unapplied_for"] == 10
    clock.now += 0.5
    ok, body = health.status()
    assert not ok and body["ok"] is False
    assert "snapshot version 5 received 10.5 s ago and not applied (deadline 10 s)" in body["problems"]
    health.applied(5)
    ok, body = health.status()
    assert ok and body["received_version"] == body["applied_version"] == 5
    assert body["last_apply"] == 1010.5 and body["last_apply_age"] == 0 and body["unapplied_for"] is None


def test_the_backlog_starts_with_the_oldest_unapplied_version():
    clock = Clock()
    health = SyncHealth(clock, apply_deadline=10)
    health.received(1)
    clock.now += 6
    health.received(2)  # apply of 1 never finished; 2 arrives
    clock.now += 6
    health.applied(1)  # 2 still waiting: 12 s since the backlog started
    assert health.status()[0] is False
    health.applied(2)
    assert health.status()[0] is True


def test_apply_failure_is_reported_and_judged_by_the_deadline():
    clock = Clock()
    health = SyncHealth(clock, apply_deadline=10)
    health.received(3)
    health.apply_failed("lb:appnet: nft: No such file or directory")
    ok, body = health.status()
    assert ok and body["last_apply_error"] == "lb:appnet: nft: No such file or directory"
    clock.now += 11
    assert health.status()[0] is False
    health.applied(3)
    assert health.status()[1]["last_apply_error"] is None


def test_unreachable_controller_is_stated_but_not_unhealthy():
    clock = Clock()
    health = SyncHealth(clock)
    ok, body = health.status()
    assert ok and body["controller"]["reachable"] is None and "no controller contacted yet" in body["problems"]
    health.received(1)
    health.applied(1)
    health.controller_unreachable("http://c1:7946: Connection refused")
    clock.now += 60
    health.controller_unreachable("http://c1:7946: connect timed out")  # still down: since stays
    clock.now += 60
    ok, body = health.status()
    assert ok is True
    assert body["controller"] == {"reachable": False, "unreachable_since": 1000.0,
                                  "last_error": "http://c1:7946: connect timed out"}
    assert any("controller unreachable for 120.0 s" in p and "kept" in p for p in body["problems"])
    health.controller_ok()
    ok, body = health.status()
    assert body["controller"] == {"reachable": True, "unreachable_since": None, "last_error": None}
    assert body["problems"] == []


def test_receiving_what_is_applied_is_not_pending():
    clock = Clock()
    health = SyncHealth(clock, apply_deadline=1)
    health.received(4)
    health.applied(4)
    health.received(4)  # the same version again (e.g. after a controller failover)
    clock.now += 100
    assert health.status()[0] is True
