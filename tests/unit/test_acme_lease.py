"""The ACME issuer lease (acme_lease.py) over a store with Swarm's rule: a write names the version
it read, and loses when the record moved on.  The Docker-backed store, through the docker
filter, is in test_docker_filter.py; two real `l7 deploy`s on the swarm lab in test_acme_lab.py."""
from __future__ import annotations

import threading
import time

import pytest

from ingressmesh.l7.acme_lease import IssuerLease, LeaseRecord


class SwarmLikeStore:
    def __init__(self):
        self.record = None
        self.down = False  # Docker unreachable
        self.writes = 0

    def read(self):
        if self.down:
            raise ConnectionError("dockerd: connection refused")
        return self.record

    def create(self, holder):
        if self.down:
            raise ConnectionError("dockerd: connection refused")
        if self.record is not None:
            return False
        self.record, self.writes = LeaseRecord(1, holder, 0), self.writes + 1
        return True

    def swap(self, seen, holder, beat):
        if self.down:
            raise ConnectionError("dockerd: connection refused")
        if self.record is None or self.record.version != seen.version:
            return False
        self.record, self.writes = LeaseRecord(seen.version + 1, holder, beat), self.writes + 1
        return True


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture()
def pair():
    store, clock = SwarmLikeStore(), Clock()
    return store, clock, IssuerLease(store, "a", 30, clock), IssuerLease(store, "b", 30, clock)


def test_one_of_two_candidates_holds_it_and_renewing_keeps_the_other_out(pair):
    store, clock, a, b = pair
    assert a.step() and not b.step()
    for _ in range(20):  # 100 s of renewals every 5 s: b never takes it
        clock.now += 5
        assert a.step() and not b.step() and a.valid() and not b.valid()
    assert store.record.holder == "a" and b.describe() == "standing by (lease held by a)"


def test_a_silent_holder_stops_issuing_before_anyone_may_take_over(pair):
    store, clock, a, b = pair
    assert a.step() and not b.step()
    clock.now += 15  # a says nothing more (its task is gone, or its manager cut off)
    assert not a.valid()  # a stops issuing at ttl / 2...
    assert not b.step()
    clock.now += 14.9
    assert not b.step()  # ...b waits a full ttl from when it last saw the record move
    clock.now += 0.2
    assert b.step() and store.record.holder == "b"
    assert not a.step() and not a.valid()  # a comes back: it lost the lease, it does not issue


def test_docker_unreachable_lets_the_lease_lapse_and_nothing_is_written(pair):
    store, clock, a, b = pair
    assert a.step()
    store.down = True
    clock.now += 5
    assert a.step()  # the last renewal is 5 s old: still within ttl / 2
    clock.now += 11
    assert not a.step() and not a.valid()
    assert not b.step()  # errors are named, never raised
    store.down = False
    assert a.step() and store.record.holder == "a"  # still the holder of record: renewed


def test_a_write_at_an_older_version_loses(pair):
    store, clock, a, b = pair
    assert a.step()
    seen = store.record
    assert store.swap(seen, "a", 1)
    assert not store.swap(seen, "b", 1)  # the compare-and-swap the lease relies on
    clock.now += 40  # b saw the record at version 2 only now: it watches from here
    assert not b.step()
    clock.now += 31
    assert b.step()


def test_two_candidates_racing_to_create_or_take_it_get_one_holder():
    store, clock = SwarmLikeStore(), Clock()
    leases = [IssuerLease(store, f"c{i}", 30, clock) for i in range(5)]
    assert [lease.step() for lease in leases] == [True, False, False, False, False]
    leases[0].release()
    assert store.record.holder == ""
    assert [lease.step() for lease in leases[1:]] == [True, False, False, False]  # released: the first taker wins


def test_the_lease_never_reads_the_wall_clock(pair, monkeypatch):
    """Managers' clocks may disagree: only each candidate's own monotonic clock counts."""
    store, clock, a, b = pair
    monkeypatch.setattr(time, "time", lambda: pytest.fail("the wall clock was read"))
    assert a.step() and not b.step()
    clock.now += 31
    assert b.step()


def test_run_steps_until_stopped():
    store, stop, seen = SwarmLikeStore(), threading.Event(), []
    lease = IssuerLease(store, "a", ttl=0.06)

    def on_step(held):
        seen.append(held)
        if len(seen) == 3:
            stop.set()
    worker = threading.Thread(target=lease.run, args=(stop, on_step))
    worker.start()
    worker.join(5)
    assert not worker.is_alive() and seen == [True, True, True] and store.writes == 3
