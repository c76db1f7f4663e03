"""Drain timing on this host's own clock: each task's state is stamped when it first arrives here.

The controller stamps `since` with its clock; comparing that with another host's clock makes an
agent 15 s ahead skip a drain (connections cut at once) and one behind drain too long.  A grace
period is relative, so the follower re-stamps a task whenever its (desired, current, health)
state differs from what it last saw, using the local clock.  A restarted follower stamps what
it finds as new: a drain then lasts at most one grace period longer, never shorter.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

from . import model


class ArrivalClock:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.seen: dict[str, tuple[tuple, float]] = {}  # task id -> (state key, local arrival time)

    def stamp(self, task: model.Task) -> model.Task:
        key = (task.desired_state, task.current_state, task.health)
        known = self.seen.get(task.id)
        if known is None or known[0] != key:
            known = (key, self.clock())
            self.seen[task.id] = known
        return task if task.since == known[1] else dataclasses.replace(task, since=known[1])

    def stamp_all(self, cluster: model.Cluster) -> model.Cluster:
        tasks = tuple(self.stamp(t) for t in cluster.tasks)
        self.keep_only({t.id for t in tasks})
        return dataclasses.replace(cluster, tasks=tasks)

    def forget(self, task_id: str) -> None:
        self.seen.pop(task_id, None)

    def keep_only(self, task_ids: set) -> None:
        for task_id in set(self.seen) - task_ids:
            del self.seen[task_id]
