"""The versioned cluster snapshot a controller serves, with long-poll waiting.

Versions: the first version is the controller's start time in milliseconds, and each change
adds one.  A restarted controller therefore starts above any version it handed out before
(unless more than one change per millisecond of downtime was published, which a swarm does
not do), so an agent never mistakes a new snapshot for one it already applied.  If an agent
still holds a version above ours (clock stepped back, or it followed another controller), the
store answers at once with its current snapshot so the agent resyncs rather than waiting for
a number it may never see.

Until the first publish there is no snapshot: waiters keep waiting (the agents keep what they
have programmed) instead of being handed an empty cluster that would remove every rule.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Callable, Optional


def canonical(cluster: dict) -> str:
    """The JSON text two equal snapshots share, whatever their key order."""
    return json.dumps(cluster, sort_keys=True, separators=(",", ":"))


class SnapshotStore:
    """Thread-safe holder of (version, cluster dict); publishers bump, long-pollers wait."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._cond = threading.Condition()
        self._version = int(clock() * 1000)
        self._cluster: Optional[dict] = None
        self._canonical: Optional[str] = None
        self._encoded: Optional[bytes] = None
        self._closed = False

    def publish(self, cluster: dict, copy: bool = True) -> int:
        """Stores `cluster` and returns the version; bumps it and wakes waiters only when the
        content differs from the current one.  With copy=False the caller promises never to
        modify `cluster` again (the controller's encoder never does), which saves a deep copy."""
        text = canonical(cluster)
        with self._cond:
            if text != self._canonical:
                # A private copy decoded from the canonical text unless the caller gave it up:
                # readers get the exact content the version stands for.
                self._cluster, self._canonical = (json.loads(text) if copy else cluster), text
                self._version += 1
                self._encoded = None
                self._cond.notify_all()
            return self._version

    def encoded(self, version: int) -> Optional[bytes]:
        """`{"version": V, "cluster": …}` as JSON bytes for the current version, built once per
        version however many agents fetch it; None if `version` is no longer current."""
        with self._cond:
            if version != self._version or self._canonical is None:
                return None
            if self._encoded is None:
                self._encoded = f'{{"version":{self._version},"cluster":{self._canonical}}}'.encode()
            return self._encoded

    def current(self) -> tuple[int, Optional[dict]]:
        """(version, cluster); cluster is None before the first publish.  The dict is shared
        and must not be modified."""
        with self._cond:
            return self._version, self._cluster

    def wait(self, since: int, timeout: float) -> Optional[tuple[int, dict]]:
        """The current snapshot as soon as it differs from version `since`, or None after
        `timeout` seconds (or on close) without a newer one."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                if self._cluster is not None and self._version != since:  # newer, or agent ahead: resync
                    return self._version, self._cluster
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
