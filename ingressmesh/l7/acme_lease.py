"""Which `l7 deploy` may issue certificates: a lease, so two never order at once.

Swarm can run two `l7 deploy` tasks for a while (a start-first update of its service, a manager
cut off while Swarm starts the task again on another one); each would place its own orders and
publish its own labels.  The lease is a record in Swarm's own store (acme_swarm.DockerLeaseStore:
a Docker secret's labels), and Swarm refuses a write made against an older version of an
object, so taking or renewing it is one compare-and-swap: of two candidates, one wins.

Expiry is judged on each candidate's own monotonic clock (the record has not moved for `ttl`
seconds), never by comparing wall-clock times written by other managers, so a skewed clock
cannot hand the lease to two issuers.  The holder renews every `ttl / 6` seconds from its own
thread (an order may take longer than that) and stops issuing once `ttl / 2` has passed since
its last renewal, well before a candidate may take over; a clean stop releases the lease so the
successor takes it at once.  A record that is missing, or names no holder, is watched for `ttl`
like a silent holder's before anyone writes one (so the first issuer of a swarm starts issuing
`ttl` after it starts, and a lease removed by hand goes to no one at once).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol

log = logging.getLogger(__name__)
DEFAULT_TTL = 30.0  # seconds without a renewal before a candidate takes the lease


@dataclass(frozen=True)
class LeaseRecord:
    version: int  # Swarm's version of the record: the compare in compare-and-swap
    holder: Optional[str]  # "" when released; None when unreadable (no label): treated as a live holder
    beat: int  # bumped by every renewal, so the record moves while its holder lives


class LeaseStore(Protocol):
    def read(self) -> Optional[LeaseRecord]:
        """The record, None when there is none yet."""

    def create(self, holder: str) -> bool:
        """False when another candidate created it first."""

    def swap(self, seen: LeaseRecord, holder: str, beat: int) -> bool:
        """Write (holder, beat) if the record is still at `seen.version`; False when it moved on."""


class IssuerLease:
    def __init__(self, store: LeaseStore, holder: str, ttl: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.holder, self.ttl, self.clock = store, holder, ttl, clock
        self._renewed_at: Optional[float] = None  # our clock, at our last successful write as holder
        # (version seen, None: no record; watched since; last seen): silence counts only over a watch
        # kept up without gaps longer than ttl / 2 (a "no record" seen twice says nothing of between)
        self._watched: Optional[tuple[Optional[int], float, float]] = None
        self.other = ""  # who holds it, when another candidate does
        self.term = 0  # +1 each time this candidate takes the lease afresh (a holder that lost it and
        # took it back must read again what others published meanwhile)

    def valid(self) -> bool:
        """Whether this candidate may order now: it holds the lease and renewed it lately."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.ttl / 2

    def step(self) -> bool:
        """One read and at most one write: renew it when ours, take it when free or stood still
        for `ttl`, else watch it.  Store errors are named and count as not holding it."""
        try:
            return self._step()
        except Exception as err:  # noqa: BLE001 - Docker unreachable, refused...: named, next step
            log.warning("ACME issuer lease: %s (%s)", err, "holding it until it lapses" if self.valid() else "not issuing")
            return self.valid()

    def _step(self) -> bool:
        now = self.clock()  # before the read: a renewal counts from when it was asked for
        record = self.store.read()
        seen_at = self.clock()  # after the read: a slow read must not backdate the watch
        if record is not None and record.holder == self.holder:
            if self.store.swap(record, self.holder, record.beat + 1):
                return self._won(True, now, "renewed")
            return self._lost(f"the lease moved on (version {record.version})")
        self.other = (record.holder if record is not None else None) or ""
        if self._renewed_at is not None:
            self._lost(f"{self.other or 'nobody'} holds it now" if record is not None else "it was removed")
        released = record is not None and record.holder == ""  # given up by a clean stop: free at once
        version = record.version if record is not None else None
        if not released:
            watched = self._watched
            if watched is None or watched[0] != version or seen_at - watched[2] > self.ttl / 2:
                self._watched = (version, seen_at, seen_at)  # it moved (or appeared, or went): its holder lives
                return False
            self._watched = (version, watched[1], seen_at)
            if seen_at - watched[1] < self.ttl:
                return False
        if record is None:  # none for a whole ttl: a first start, or removed (by hand; by `docker stack
            # rm`, whose l7 task is gone well within ttl, so it never writes one again)
            return self._won(self.store.create(self.holder), now, "created") or self._lost("another created it")
        taken = self.store.swap(record, self.holder, record.beat + 1)
        if taken:
            log.info("ACME issuer lease taken from %s", f"{record.holder or 'an unnamed holder'} (silent for "
                     f"{self.ttl:.0f} s)" if not released else "nobody (released)")
        return self._won(taken, now, "taken")

    def _won(self, won: bool, now: float, how: str) -> bool:
        if not won:
            return False
        if self._renewed_at is None:
            log.info("ACME issuer lease %s by %s: this l7 deploy issues", how, self.holder)
            self.term += 1
        self._renewed_at, self._watched, self.other = now, None, ""
        return True

    def _lost(self, why: str) -> bool:
        if self._renewed_at is not None:
            log.warning("ACME issuer lease lost: %s; not issuing", why)
        self._renewed_at = None
        return False

    def release(self) -> None:
        """On a clean stop: give it up, so a successor need not wait `ttl`."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            record = self.store.read()
            if record is not None and record.holder == self.holder:
                self.store.swap(record, "", record.beat + 1)
        except Exception as err:  # noqa: BLE001 - the successor waits ttl instead
            log.warning("ACME issuer lease not released (%s): a successor waits %.0f s", err, self.ttl)

    def run(self, stop: threading.Event, on_step: Callable[[bool], None] = lambda held: None) -> None:
        """Steps every ttl / 6 seconds until `stop` (join this thread before `release`: a step
        under way could otherwise renew what was just released)."""
        while not stop.is_set():
            on_step(self.step())
            stop.wait(self.ttl / 6)

    def describe(self) -> str:
        if self.valid():
            return f"issuing (lease held by {self.holder})"
        return f"standing by (lease held by {self.other})" if self.other else "standing by (no lease yet)"
