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


def watch(clock, seconds: float, *leases) -> list[bool]:
    """`seconds` pass with each lease stepping every 5 s (its thread's period at ttl 30 s); what
    the last step of each answered."""
    held = [lease.step() for lease in leases]
    for _ in range(int(seconds // 5)):
        clock.now += 5
        held = [lease.step() for lease in leases]
    return held


def first_holder(clock, lease, *others) -> None:
    """A swarm's first issuer: no record, so it waits a whole ttl (as for a silent holder) and creates it."""
    assert watch(clock, 25, lease, *others) == [False] * (1 + len(others))
    clock.now += 5
    assert lease.step() and lease.term == 1
    assert not any(other.step() for other in others)  # they see it at their next step


@pytest.fixture()
def pair():
    store, clock = SwarmLikeStore(), Clock()
    a, b = IssuerLease(store, "a", 30, clock), IssuerLease(store, "b", 30, clock)
    first_holder(clock, a, b)
    return store, clock, a, b


def test_one_of_two_candidates_holds_it_and_renewing_keeps_the_other_out(pair):
    store, clock, a, b = pair
    assert not b.step()
    for _ in range(20):  # 100 s of renewals every 5 s: b never takes it
        clock.now += 5
        assert a.step() and not b.step() and a.valid() and not b.valid()
    assert store.record.holder == "a" and b.describe() == "standing by (lease held by a)" and a.term == 1


def test_a_silent_holder_stops_issuing_before_anyone_may_take_over(pair):
    store, clock, a, b = pair
    assert not b.step()
    clock.now += 15  # a says nothing more (its task is gone, or its manager cut off)
    assert not a.valid()  # a stops issuing at ttl / 2...
    assert not b.step()
    clock.now += 14.9
    assert not b.step()  # ...b waits a full ttl from when it last saw the record move
    clock.now += 0.2
    assert b.step() and store.record.holder == "b"
    assert not a.step() and not a.valid()  # a comes back: it lost the lease, it does not issue


def test_a_slow_read_does_not_shorten_the_wait(pair):
    """The watch starts when the read came back, not when it was asked for."""
    store, clock, a, b = pair
    slow_read = store.read

    def read():
        clock.now += 19  # Docker answers slowly; meanwhile a renews
        store.read = slow_read
        assert a.step()
        return slow_read()
    store.read = read
    assert not b.step()
    store.read = slow_read
    clock.now += 11  # 30 s after b asked, 11 s after it saw a's renewal: a is valid, b must wait
    assert a.valid() and not b.step()


def test_docker_unreachable_lets_the_lease_lapse_and_nothing_is_written(pair):
    store, clock, a, b = pair
    store.down = True
    clock.now += 5
    assert a.step()  # the last renewal is 5 s old: still within ttl / 2
    clock.now += 11
    assert not a.step() and not a.valid()
    assert not b.step()  # errors are named, never raised
    store.down = False
    assert a.step() and store.record.holder == "a"  # still the holder of record: renewed
    assert a.term == 1  # nobody else held it meanwhile (a write by another would have moved it on)


def test_a_record_removed_or_unreadable_goes_to_no_one_before_a_ttl(pair):
    store, clock, a, b = pair
    store.record = None  # `docker secret rm` by hand
    assert not a.step() and not a.valid() and not b.step()
    assert watch(clock, 25, a, b) == [False, False]
    clock.now += 5
    assert [a.step(), b.step()].count(True) == 1  # one of them creates it again, a ttl later
    store.record = LeaseRecord(store.record.version + 1, None, 0)  # its holder label edited away
    assert watch(clock, 25, a, b) == [False, False]  # an unnamed holder is watched like a silent one
    clock.now += 5
    assert [a.step(), b.step()].count(True) == 1 and store.record.holder in ("a", "b")


def test_a_gap_in_the_watch_starts_it_again(pair):
    """A standby that could not look for a while (Docker unreachable from it) saw nothing of
    that while: the record may have moved and gone; it watches a whole ttl again."""
    store, clock, a, b = pair
    store.record = None
    assert not b.step()
    clock.now += 20  # no step for 20 s (> ttl / 2)
    assert not b.step()
    assert watch(clock, 25, b) == [False]
    clock.now += 5
    assert b.step()


def test_a_holder_that_lost_the_lease_and_took_it_back_starts_a_new_term(pair):
    store, clock, a, b = pair
    a.release()
    assert b.step() and b.term == 1  # b published in between...
    b.release()
    assert a.step() and a.term == 2  # ...so a reads back before it publishes (acme_deploy)


def test_a_write_at_an_older_version_loses(pair):
    store, clock, a, b = pair
    seen = store.record
    assert store.swap(seen, "a", 1)
    assert not store.swap(seen, "b", 1)  # the compare-and-swap the lease relies on
    clock.now += 40  # b saw the record at this version only now: it watches from here
    assert watch(clock, 25, b) == [False]
    clock.now += 5
    assert b.step()


def test_candidates_racing_for_a_released_lease_get_one_holder():
    store, clock = SwarmLikeStore(), Clock()
    leases = [IssuerLease(store, f"c{i}", 30, clock) for i in range(5)]
    first_holder(clock, leases[0], *leases[1:])
    leases[0].release()
    assert store.record.holder == ""
    assert [lease.step() for lease in leases[1:]] == [True, False, False, False]  # released: the first taker wins


def test_the_lease_never_reads_the_wall_clock(monkeypatch):
    """Managers' clocks may disagree: only each candidate's own monotonic clock counts."""
    store, clock = SwarmLikeStore(), Clock()
    monkeypatch.setattr(time, "time", lambda: pytest.fail("the wall clock was read"))
    a, b = IssuerLease(store, "a", 30, clock), IssuerLease(store, "b", 30, clock)
    first_holder(clock, a, b)
    assert watch(clock, 25, b) == [False]
    clock.now += 5
    assert b.step()


def test_run_steps_until_stopped():
    store, stop, seen = SwarmLikeStore(), threading.Event(), []
    lease = IssuerLease(store, "a", ttl=0.06)

    def on_step(held):
        seen.append(held)
        if held:
            stop.set()
    worker = threading.Thread(target=lease.run, args=(stop, on_step))
    worker.start()
    worker.join(5)
    # no record: watched for a ttl (0.06 s, a step every 0.01 s), then created
    assert not worker.is_alive() and seen[-1] is True and 3 <= len(seen) <= 50 and store.writes == 1
