"""Is this agent keeping its node in sync?  The answer behind the agent's /healthz.

Unhealthy means: a snapshot arrived and has not been applied within `apply_deadline` seconds
(apply failing or wedged).  A controller that cannot be reached does not make the agent
unhealthy: the rules already in the kernel keep working, and restarting the agent would not
bring the controller back.  The body says so plainly, with since when.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

DEFAULT_APPLY_DEADLINE = 10.0


class SyncHealth:
    """Records received/applied versions and controller contact; `status()` judges them."""

    def __init__(self, clock: Callable[[], float] = time.time, apply_deadline: float = DEFAULT_APPLY_DEADLINE):
        self._clock, self.apply_deadline = clock, apply_deadline
        self._lock = threading.Lock()
        self._received: Optional[int] = None
        self._pending_since: Optional[float] = None  # when the oldest unapplied version arrived
        self._applied: Optional[int] = None
        self._applied_at: Optional[float] = None
        self._apply_error: Optional[str] = None
        self._reachable: Optional[bool] = None
        self._unreachable_since: Optional[float] = None
        self._controller_error: Optional[str] = None

    def received(self, version: int) -> None:
        with self._lock:
            self._received = version
            if version == self._applied:
                self._pending_since = None
            elif self._pending_since is None:  # keep the earliest: the backlog started then
                self._pending_since = self._clock()

    def applied(self, version: int) -> None:
        with self._lock:
            self._applied, self._applied_at, self._apply_error = version, self._clock(), None
            if version == self._received:
                self._pending_since = None

    def apply_failed(self, error: str) -> None:
        """Notes why the last apply failed (for the body; the deadline judges health)."""
        with self._lock:
            self._apply_error = error

    def controller_ok(self) -> None:
        with self._lock:
            self._reachable, self._unreachable_since, self._controller_error = True, None, None

    def controller_unreachable(self, error: str) -> None:
        with self._lock:
            if self._reachable is not False:
                self._unreachable_since = self._clock()
            self._reachable, self._controller_error = False, error

    def status(self) -> tuple[bool, dict]:
        """(ok, details for a JSON body)."""
        with self._lock:
            now = self._clock()
            lag = now - self._pending_since if self._pending_since is not None else None
            ok = lag is None or lag <= self.apply_deadline
            problems = []
            if not ok:
                problems.append(f"snapshot version {self._received} received {lag:.1f} s ago and not applied "
                                f"(deadline {self.apply_deadline:g} s)")
            if self._reachable is False:
                problems.append(f"controller unreachable for {now - self._unreachable_since:.1f} s; "
                                "the rules in the kernel are kept as they are")
            elif self._reachable is None:
                problems.append("no controller contacted yet")
            return ok, {
                "ok": ok,
                "problems": problems,
                "received_version": self._received,
                "applied_version": self._applied,
                "last_apply": self._applied_at,
                "last_apply_age": now - self._applied_at if self._applied_at is not None else None,
                "unapplied_for": lag,
                "last_apply_error": self._apply_error,
                "controller": {
                    "reachable": self._reachable,
                    "unreachable_since": self._unreachable_since,
                    "last_error": self._controller_error,
                },
            }
