"""The versioned cluster snapshot a controller serves, with long-poll waiting and deltas.

Versions: the first version is the controller's start time in milliseconds, and each change
adds one.  A restarted controller therefore starts above any version it handed out before
(unless more than one change per millisecond of downtime was published, which a swarm does
not do), so an agent never mistakes a new snapshot for one it already applied.  If an agent
still holds a version above ours (clock stepped back, or it followed another controller), the
store answers at once with its current snapshot so the agent resyncs rather than waiting for
a number it may never see.

The store keeps the objects by id and a log of the last LOG_VERSIONS changes (see delta.py),
so an agent at a recent version gets only what changed since; one that is too far behind, new,
or from another controller's numbering gets the whole snapshot.  The whole snapshot's JSON is
built only when somebody asks for it, once per version.

Until the first publish there is no snapshot: waiters keep waiting (the agents keep what they
have programmed) instead of being handed an empty cluster that would remove every rule.
"""
from __future__ import annotations

import collections
import json
import threading
import time
from typing import Callable, Optional

from .. import delta as deltas

LOG_VERSIONS = 256  # deltas kept; an agent further behind gets the whole snapshot
# A delta carrying more than this share of the objects is sent as the whole snapshot instead.
DELTA_SHARE = 0.5


class SnapshotStore:
    """Thread-safe holder of (version, cluster); publishers bump, long-pollers wait."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._cond = threading.Condition()
        self._version = int(clock() * 1000)
        self._objects: deltas.Objects = {}
        self._meta: dict = {}
        self._published = False
        self._log: collections.deque = collections.deque(maxlen=LOG_VERSIONS)  # (version before, delta)
        self._whole: Optional[dict] = None  # the current cluster as a dict, built on demand
        self._encoded: Optional[bytes] = None
        self._delta_bodies: dict = {}  # since -> encoded delta to the current version
        self._closed = False

    def publish(self, cluster: dict, copy: bool = True) -> int:
        """Stores `cluster` and returns the version; bumps it and wakes waiters only when the
        content differs from the current one (key and object order do not count).  With
        copy=False the caller promises never to modify `cluster` again."""
        if copy:
            cluster = json.loads(json.dumps(cluster))
        objects, meta = deltas.split(cluster)
        with self._cond:
            change = deltas.diff(self._objects, self._meta, objects, meta)
            if deltas.is_empty(change) and self._published:
                return self._version
            self._commit(change, objects, meta)
            return self._version

    def publish_delta(self, change: dict) -> int:
        """Applies a delta the caller computed (the controller's incremental merge): costs what
        changed, not the swarm.  Sets equal to what is stored are dropped first, so a delta that
        changes nothing does not bump the version."""
        with self._cond:
            sets = {kind: [f for f in forms if self._objects.get(kind, {}).get(f["id"]) != f]
                    for kind, forms in change["set"].items()}
            removes = {kind: [i for i in ids if i in self._objects.get(kind, {})]
                       for kind, ids in change["remove"].items()}
            meta = change["meta"] if change["meta"] is not None and change["meta"] != self._meta else None
            change = {"set": {k: v for k, v in sets.items() if v}, "remove": {k: v for k, v in removes.items() if v},
                      "meta": meta}
            if deltas.is_empty(change) and self._published:
                return self._version
            objects = self._objects
            new_meta = deltas.apply(objects, self._meta, change)
            self._commit(change, objects, new_meta)
            return self._version

    def _commit(self, change: dict, objects: deltas.Objects, meta: dict) -> None:
        """With the lock held: make (objects, meta) current as the next version."""
        self._log.append((self._version if self._published else None, change))
        self._objects, self._meta, self._published = objects, meta, True
        self._version += 1
        self._whole = self._encoded = None
        self._delta_bodies = {}
        self._cond.notify_all()

    def encoded(self, version: int) -> Optional[bytes]:
        """`{"version": V, "cluster": …}` as JSON bytes for the current version, built once per
        version however many agents fetch it; None if `version` is no longer current."""
        with self._cond:
            if version != self._version or not self._published:
                return None
            if self._encoded is None:
                text = json.dumps(self._cluster(), separators=(",", ":"))
                self._encoded = f'{{"version":{self._version},"cluster":{text}}}'.encode()
            return self._encoded

    def encoded_delta(self, since: int, version: int) -> Optional[bytes]:
        """`{"version": V, "since": S, "delta": …}` as JSON bytes: what changed from version
        `since` to the current `version`.  None when `version` is no longer current, `since` is
        not in the log (too old, or another controller's number), or the delta would be larger
        than the whole snapshot is worth."""
        with self._cond:
            if version != self._version or not self._published:
                return None
            if since not in self._delta_bodies:
                combined = self._delta_since(since)
                self._delta_bodies[since] = None if combined is None else json.dumps(
                    {"version": self._version, "since": since, "delta": combined}, separators=(",", ":")).encode()
            return self._delta_bodies[since]

    def _delta_since(self, since: int) -> Optional[dict]:
        steps = [change for before, change in self._log if before is not None and before >= since]
        if not steps or since != self._version - len(steps):  # not in the log
            return None
        combined = steps[0]
        for step in steps[1:]:
            combined = deltas.compose(combined, step)
        total = sum(len(items) for items in self._objects.values())
        return None if deltas.size(combined) > max(64, DELTA_SHARE * total) else combined

    def body_since(self, since: int, delta: bool) -> Optional[tuple[int, bytes]]:
        """(version, encoded answer) for a reader at `since`, taken atomically: the delta when
        `delta` is asked for and possible, else the whole snapshot; None before the first publish."""
        with self._cond:
            if not self._published:
                return None
            version = self._version
            body = self.encoded_delta(since, version) if delta else None
            return version, body or self.encoded(version)

    def _cluster(self) -> dict:
        if self._whole is None:
            self._whole = deltas.join(self._objects, self._meta)
        return self._whole

    def current(self) -> tuple[int, Optional[dict]]:
        """(version, cluster); cluster is None before the first publish.  The dict is shared
        and must not be modified."""
        with self._cond:
            return self._version, (self._cluster() if self._published else None)

    def counts(self) -> dict:
        """How many objects of each kind the current snapshot holds."""
        with self._cond:
            return {kind: len(items) for kind, items in self._objects.items()}

    def wait(self, since: int, timeout: float) -> Optional[tuple[int, dict]]:
        """The current snapshot as soon as it differs from version `since`, or None after
        `timeout` seconds (or on close) without a newer one."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._published and self._version != since:  # newer, or agent ahead: resync
                    return self._version, self._cluster()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return None
                self._cond.wait(remaining)

    def newer_than(self, since: int, timeout: float) -> Optional[int]:
        """Like wait, but only the version: no whole cluster is built for a delta reader."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._published and self._version != since:
                    return self._version
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        """Releases every waiter now (they get None): used when the controller stops."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def __repr__(self) -> str:
        return f"SnapshotStore(version={self.version})"
