"""Follows a swarm manager: full reads on swarm events, a fast task resync while things change.

Swarm has no task events, so tasks are polled: every `busy_interval` (1 s) while anything changed
in the last `busy_window`, every `idle_interval` when idle, and at once when `poke()` says a node
saw a container start or stop.  Listing tasks costs what the swarm holds (about 2 KiB of JSON
per task: seconds at 100,000 tasks, see bench/provider_poll.py), so the intervals stretch with
the measured cost of the last read to keep polling under `busy_share` / `idle_share` of a core;
the agents' reports (a container started or stopping) poke a read at once whatever the interval.
A failed read keeps the last good state and retries with backoff; the error names the endpoint.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Optional

from .backoff import Backoff
from .events import EventFollower
from .state import SwarmState, read_swarm, read_tasks

log = logging.getLogger(__name__)
SWARM_EVENTS = MappingProxyType({"type": ("service", "network", "node")})


@dataclass(frozen=True)
class PollPacing:
    busy_interval: float = 1.0
    idle_interval: float = 5.0
    busy_window: float = 30.0
    min_spacing: float = 0.1  # between two reads, however many pokes arrive
    busy_share: float = 0.2  # of one core, at most, spent listing tasks while things change
    idle_share: float = 0.01  # ... and while nothing does
    max_interval: float = 300.0  # the safety net is never longer than this

    def interval(self, busy: bool, read_seconds: float) -> float:
        """Seconds to the next poll after a read that took `read_seconds`."""
        base, share = (self.busy_interval, self.busy_share) if busy else (self.idle_interval, self.idle_share)
        return max(base, min(self.max_interval, read_seconds / share))

    def spacing(self, read_seconds: float) -> float:
        """Seconds between two poked reads: a storm of pokes spends at most half a core."""
        return max(self.min_spacing, read_seconds)


class SwarmProvider:
    def __init__(self, make_api: Callable, endpoint: str, on_state: Callable[[SwarmState], None],
                 pacing: PollPacing = PollPacing(), on_read: Optional[Callable[[float, Optional[str]], None]] = None):
        self.make_api, self.endpoint, self.on_state, self.pacing = make_api, endpoint, on_state, pacing
        self.on_read = on_read or (lambda seconds, error: None)
        self.state: Optional[SwarmState] = None
        self.last_error = ""
        self.last_success = 0.0
        self._wake = threading.Condition()
        self._full_needed = True
        self._poked = False
        self._last_change = 0.0
        self.read_seconds = 0.0  # how long the last read took: the polling stretches with it
        self._stopped = False
        self._api = None
        self.events = EventFollower(make_api, SWARM_EVENTS, self._on_event, self._on_reconnect, endpoint)
        self.thread = threading.Thread(target=self._run, name="swarm-poll", daemon=True)

    def start(self) -> None:
        self.events.start()
        self.thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        self.events.stop()

    def poke(self, full: bool = False, busy: bool = False) -> None:
        """Re-read soon: a node saw a container start, stop or change health, or an event arrived.
        `busy`: the manager's task list is expected to change shortly (Swarm moves a task with a
        health check to running only after its node saw it healthy), so poll at the busy interval
        for a busy window from now, not at the idle one: idle, it stretches with the read's cost
        (read_seconds / idle_share, minutes under emulation or with ~100,000 tasks), and a task
        that turned healthy would wait that long for traffic (150-210 s seen in the IPVS rig)."""
        with self._wake:
            self._poked = True
            self._full_needed = self._full_needed or full
            if busy:
                self._last_change = time.monotonic()
            self._wake.notify_all()

    def _on_event(self, event: dict) -> None:
        self.poke(full=True)

    def _on_reconnect(self) -> None:
        self.poke(full=True)  # events may have been missed while the stream was down

    def _interval(self, now: float) -> float:
        busy = now - self._last_change < self.pacing.busy_window
        return self.pacing.interval(busy, self.read_seconds)

    def _run(self) -> None:
        backoff = Backoff()
        next_read = 0.0
        while True:
            with self._wake:
                while not self._stopped:
                    now = time.monotonic()
                    if self._poked or now >= next_read:
                        break
                    self._wake.wait(next_read - now)
                if self._stopped:
                    return
                full = self._full_needed or self.state is None
                self._poked = self._full_needed = False
            try:
                error = self._read(full)
            except Exception:  # noqa: BLE001 - a failing callback must not stop the polling
                log.exception("swarm read handling failed; retrying")
                error = "callback failed"
            now = time.monotonic()
            if error is None:
                backoff.reset()
                next_read = now + self._interval(now)
            else:
                with self._wake:
                    self._full_needed = self._full_needed or full
                next_read = now + backoff.next_delay()
            time.sleep(self.pacing.spacing(self.read_seconds))

    def _read(self, full: bool) -> Optional[str]:
        started = time.monotonic()
        try:
            if self._api is None:
                self._api = self.make_api()
            state = read_swarm(self._api) if full else read_tasks(self._api, self.state)
        except Exception as err:  # noqa: BLE001 - any API failure: keep the last good state
            self._api = None
            self.last_error = f"{self.endpoint}: {err}"
            log.warning("swarm API %s: %s (keeping the last good state)", self.endpoint, err)
            self.on_read(time.monotonic() - started, self.last_error)
            return self.last_error
        self.last_error, self.last_success = "", time.time()
        self.read_seconds = time.monotonic() - started
        self.on_read(self.read_seconds, None)
        if state != self.state:
            for message in set(state.errors) - set(self.state.errors if self.state else ()):
                log.error("refused: %s", message)
            self.state = state
            self._last_change = time.monotonic()
            self.on_state(state)
        return None
