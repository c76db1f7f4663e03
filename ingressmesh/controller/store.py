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
import secrets
import threading
import time
from typing import Callable, Optional

from .. import delta as deltas

LOG_VERSIONS = 256  # deltas kept; an agent further behind gets the whole snapshot
# A delta carrying more than this share of the objects is sent as the whole snapshot instead.
DELTA_SHARE = 0.5
DELTA_CACHE_BYTES = 64 << 20  # encoded deltas kept for the current version, at most
_UNKNOWN = object()


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
        self._delta_bodies: dict = {}  # since -> encoded delta to the current version (None: too large)
        self._delta_bytes = 0
        self._encoding = threading.Lock()
        # This store's incarnation: two controllers (or one restarted) may hand out the same
        # version number for different content, so a delta is only given to a reader whose
        # version came from this very store.
        self.epoch = secrets.token_hex(8)
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
        self._delta_bodies, self._delta_bytes = {}, 0
        self._cond.notify_all()

    def encoded(self, version: int) -> Optional[bytes]:
        """`{"version": V, "epoch": E, "cluster": …}` as JSON bytes for the current version,
        built once per version however many agents fetch it; None if `version` is no longer
        current."""
        found = self.body_since(version - 1, delta=False)
        return found[1] if found is not None and found[0] == version else None

    def encoded_delta(self, since: int, version: int) -> Optional[bytes]:
        """`{"version": V, "epoch": E, "since": S, "delta": …}` as JSON bytes: what changed from
        version `since` to the current `version`.  None when `version` is no longer current,
        `since` is not in the log, or the delta would carry more than the snapshot is worth."""
        found = self.body_since(since, delta=True, epoch=self.epoch, whole=False)
        return found[1] if found is not None and found[0] == version else None

    def body_since(self, since: int, delta: bool, epoch: Optional[str] = None,
                   whole: bool = True) -> Optional[tuple[int, Optional[bytes]]]:
        """(version, encoded answer) for a reader at `since`: the delta when `delta` is asked
        for, `epoch` is this store's (the reader's version is one of ours) and the log has it;
        else the whole snapshot (None instead when `whole` is False).  None before the first
        publish.  The encoding runs outside the store's lock (publishers never wait for it) and
        the whole snapshot is encoded by one reader at a time, once per version."""
        with self._cond:
            if not self._published:
                return None
            version = self._version
            steps, cached = None, None
            if delta and epoch == self.epoch:
                cached = self._delta_bodies.get(since, _UNKNOWN)
                if cached is _UNKNOWN:
                    steps = self._steps_since(since)
            limit = max(64, DELTA_SHARE * sum(len(items) for items in self._objects.values()))
        if cached not in (None, _UNKNOWN):
            return version, cached
        if steps:
            body = self._encode_delta(version, since, steps, limit)
            if body is not None:
                return version, body
        return (version, self._whole_body(version)) if whole else (version, None)

    def _steps_since(self, since: int) -> Optional[list]:
        """With the lock held: the logged deltas from `since` to now, or None if not logged."""
        steps = [change for before, change in self._log if before is not None and before >= since]
        return steps if steps and since == self._version - len(steps) else None

    def _encode_delta(self, version: int, since: int, steps: list, limit: float) -> Optional[bytes]:
        combined = deltas.compose_all(steps, limit)
        body = None if combined is None else json.dumps(
            {"version": version, "epoch": self.epoch, "since": since, "delta": combined},
            separators=(",", ":")).encode()
        with self._cond:  # remembered for this version; "too large" too (only logged versions)
            if version == self._version and self._delta_bytes + len(body or b"") <= DELTA_CACHE_BYTES:
                self._delta_bodies[since] = body
                self._delta_bytes += len(body or b"")
        return body

    def _whole_body(self, version: int) -> bytes:
        with self._encoding:  # one whole encoding at a time: many agents resyncing share it
            with self._cond:
                if version == self._version and self._encoded is not None:
                    return self._encoded
                version, cluster = self._version, self._cluster()
            text = json.dumps(cluster, separators=(",", ":"))
            body = f'{{"version":{version},"epoch":"{self.epoch}","cluster":{text}}}'.encode()
            with self._cond:
                if version == self._version:
                    self._encoded = body
            return body

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
