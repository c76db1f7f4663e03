"""linger(): how long a stopping proxy keeps accepting, on a fake clock."""
from __future__ import annotations

from ingressmesh.l7.linger import linger


class Clock:
    """Time moves only when linger sleeps; `arrivals` maps a time to new connections from then on."""

    def __init__(self, arrivals=lambda now: 0):
        self.now, self.arrivals, self.looks = 0.0, arrivals, []

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def accepted(self):
        self.looks.append(self.now)
        return self.arrivals(self.now)

    def run(self, minimum: float, maximum: float, **kw) -> tuple[str, float]:
        why = linger(self.accepted, minimum, maximum, clock=lambda: self.now, sleep=self.sleep, **kw)
        return why, round(self.now, 6)


def test_no_new_connection_after_the_minimum_ends_one_quiet_second_later():
    assert Clock().run(2.0, 10.0) == ("quiet", 3.0)


def test_connections_still_coming_keep_it_serving_until_they_stop():
    # one every 0.2 s until 4.5 s after SIGTERM (the mesh took 4.5 s to take the task out)
    clock = Clock(lambda now: int(min(now, 4.5) / 0.2))
    why, ended = clock.run(2.0, 10.0)
    assert why == "quiet" and 5.3 <= ended <= 5.6, ended


def test_connections_that_never_stop_end_at_the_maximum():
    clock = Clock(lambda now: int(now * 10))
    why, ended = clock.run(2.0, 10.0)
    assert why == "maximum" and 10.0 <= ended < 10.11, ended


def test_a_reload_restarting_the_counters_counts_as_activity_not_as_quiet():
    clock = Clock(lambda now: 50 if now < 2.5 else 3 if now < 3.2 else 4)
    why, ended = clock.run(2.0, 10.0)
    assert why == "quiet" and abs(ended - 4.3) < 0.11, ended


def test_unreadable_counters_fall_back_to_the_minimum():
    assert Clock(lambda now: None).run(2.0, 10.0) == ("unknown", 2.0)
    late = Clock(lambda now: 1 if now < 2.3 else None)
    assert late.run(2.0, 10.0)[0] == "unknown" and late.now < 2.5


def test_a_maximum_not_above_the_minimum_is_a_fixed_wait_without_looking():
    clock = Clock()
    assert clock.run(0.5, 0.5) == ("fixed", 0.5) and clock.looks == []
    assert Clock().run(0.0, 0.0) == ("fixed", 0.0)
