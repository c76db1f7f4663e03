"""linger(): how long a stopping proxy keeps accepting, on a fake clock."""
from __future__ import annotations

from ingressmesh.l7.linger import READ_TIMEOUT, Linger, linger


class Clock:
    """Time moves only when linger sleeps; `arrivals` maps a time to new connections from then on."""

    def __init__(self, arrivals=lambda now: 0, read_takes: float = 0.0):
        self.now, self.arrivals, self.looks, self.read_takes = 0.0, arrivals, [], read_takes

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def accepted(self, timeout: float):
        assert 0 < timeout <= READ_TIMEOUT
        self.looks.append(self.now)
        if self.read_takes >= timeout:  # the read timed out
            self.now += timeout
            return None
        self.now += self.read_takes
        return self.arrivals(self.now)

    def run(self, minimum: float, maximum: float, **kw) -> tuple[Linger, float]:
        why = linger(self.accepted, minimum, maximum, clock=lambda: self.now, sleep=self.sleep, **kw)
        return why, round(self.now, 6)


def test_no_new_connection_after_the_minimum_ends_one_quiet_second_later():
    assert Clock().run(2.0, 10.0) == (Linger.QUIET, 3.0)


def test_connections_still_coming_keep_it_serving_until_they_stop():
    # one every 0.2 s until 4.5 s after SIGTERM (the mesh took 4.5 s to take the task out)
    clock = Clock(lambda now: int(min(now, 4.5) / 0.2))
    why, ended = clock.run(2.0, 10.0)
    assert why is Linger.QUIET and 5.3 <= ended <= 5.6, ended


def test_connections_that_never_stop_end_at_the_maximum():
    clock = Clock(lambda now: int(now * 10))
    why, ended = clock.run(2.0, 10.0)
    assert why is Linger.MAXIMUM and 10.0 <= ended < 10.11, ended


def test_a_reload_restarting_the_counters_counts_as_activity_not_as_quiet():
    clock = Clock(lambda now: 50 if now < 2.5 else 3 if now < 3.2 else 4)
    why, ended = clock.run(2.0, 10.0)
    assert why is Linger.QUIET and abs(ended - 4.3) < 0.11, ended


def test_unreadable_counters_fall_back_to_the_minimum():
    assert Clock(lambda now: None).run(2.0, 10.0) == (Linger.UNKNOWN, 2.0)


def test_a_failed_read_after_a_good_one_keeps_it_serving_three_in_a_row_end_it():
    one_miss = Clock(lambda now: None if 2.25 < now < 2.35 else 1)
    why, ended = one_miss.run(2.0, 10.0)
    assert why is Linger.QUIET and ended >= 3.25, ended  # not 3.0: the quiet second began again at the miss
    gone = Clock(lambda now: 1 if now < 2.3 else None)
    why, ended = gone.run(2.0, 10.0)
    assert why is Linger.UNKNOWN and 2.45 < ended < 2.65, ended  # misses at 2.3, 2.4, 2.5


def test_slow_reads_never_carry_it_past_the_maximum():
    clock = Clock(lambda now: int(now * 10), read_takes=0.9)  # busy node: each read nearly times out
    why, ended = clock.run(2.0, 10.0)
    assert why is Linger.MAXIMUM and ended <= 10.1, ended
    stuck = Clock(lambda now: 1, read_takes=30)  # every read times out: three misses, then give up
    why, ended = stuck.run(2.0, 10.0)
    assert why is Linger.UNKNOWN and ended <= 2.0 + 4 * READ_TIMEOUT + 0.3, ended


def test_no_connection_at_all_is_quiet_even_when_the_maximum_comes_first():
    assert Clock().run(2.0, 2.5)[0] is Linger.QUIET  # a short grace: the maximum is under minimum + 1 s


def test_a_maximum_not_above_the_minimum_is_a_fixed_wait_without_looking():
    clock = Clock()
    assert clock.run(0.5, 0.5) == (Linger.FIXED, 0.5) and clock.looks == []
    assert Clock().run(0.0, 0.0) == (Linger.FIXED, 0.0)
