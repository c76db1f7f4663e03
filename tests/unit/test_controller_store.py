"""SnapshotStore: versions bump on real changes only, long-poll waiters wake on publish."""
from __future__ import annotations

import threading
import time

from ingressmesh.controller.store import SnapshotStore

A = {"nodes": [{"id": "n1"}], "services": []}
B = {"nodes": [{"id": "n1"}, {"id": "n2"}], "services": []}


def test_first_version_comes_from_the_start_time_and_bumps_by_one():
    store = SnapshotStore(clock=lambda: 1700000000.1234)
    assert store.current() == (1700000000123, None)
    assert store.publish(A) == 1700000000124
    assert store.publish(B) == 1700000000125


def test_a_restarted_controller_starts_above_the_old_versions():
    old = SnapshotStore(clock=lambda: 1000.0)
    for i in range(5):
        old.publish({"i": i})
    new = SnapshotStore(clock=lambda: 1000.5)  # restarted half a second later
    assert new.publish(A) > old.version


def test_same_content_does_not_bump():
    store = SnapshotStore()
    v = store.publish(A)
    assert store.publish({"services": [], "nodes": [{"id": "n1"}]}) == v  # key order does not matter
    assert store.publish(B) == v + 1


def test_published_dict_is_copied():
    store = SnapshotStore()
    mine = {"nodes": [{"id": "n1"}]}
    v = store.publish(mine)
    mine["nodes"].append({"id": "n2"})
    assert store.current() == (v, {"nodes": [{"id": "n1"}]})
    assert store.publish(mine) == v + 1


def test_wait_returns_at_once_when_newer_or_when_the_agent_is_ahead():
    store = SnapshotStore()
    v = store.publish(A)
    start = time.monotonic()
    assert store.wait(v - 1, 5) == (v, A)
    assert store.wait(v + 1000, 5) == (v, A)  # agent followed an older/other controller: resync
    assert store.wait(0, 5) == (v, A)
    assert time.monotonic() - start < 1


def test_wait_times_out_when_nothing_is_newer():
    store = SnapshotStore()
    v = store.publish(A)
    start = time.monotonic()
    assert store.wait(v, 0.2) is None
    assert 0.19 <= time.monotonic() - start < 2


def test_nothing_is_served_before_the_first_publish():
    store = SnapshotStore()
    assert store.wait(0, 0.05) is None  # an empty cluster would wipe every node's rules


def test_waiters_wake_on_publish_and_on_close():
    store = SnapshotStore()
    v = store.publish(A)
    results = []
    waiters = [threading.Thread(target=lambda: results.append(store.wait(v, 10))) for _ in range(3)]
    for t in waiters:
        t.start()
    time.sleep(0.1)
    start = time.monotonic()
    store.publish(A)  # no change: nobody wakes
    time.sleep(0.1)
    assert results == []
    store.publish(B)
    for t in waiters:
        t.join(5)
    assert results == [(v + 1, B)] * 3 and time.monotonic() - start < 2

    waiter = threading.Thread(target=lambda: results.append(store.wait(v + 1, 10)))
    waiter.start()
    time.sleep(0.05)
    store.close()
    waiter.join(5)
    assert not waiter.is_alive() and results[-1] is None
