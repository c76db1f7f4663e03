"""When the issuer orders a certificate for a host: renewal ahead of expiry, backoff after
errors, and the ACME server's rate limits.  Pure (the clock is passed in), so every rule is a
unit test; the issuer keeps one HostState per host and asks `due`.

- a host without a certificate is due at once; one with a certificate `renew_before` seconds
  before it expires (default 30 days: acme_settings.py);
- after an error the host waits `first` seconds, doubled per consecutive error up to `cap`;
  a `rateLimited` answer waits at least `rate_limited` seconds;
- the issuer places at most `max_orders` orders in any `window` seconds (all hosts together),
  so a bug or a flapping label cannot exhaust a public CA's limits.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Optional

RATE_LIMITED = "urn:ietf:params:acme:error:rateLimited"


@dataclass(frozen=True)
class Policy:
    renew_before: float = 30 * 86400.0
    first: float = 60.0  # backoff after the first error
    cap: float = 6 * 3600.0  # the longest backoff
    rate_limited: float = 3600.0  # the least wait after the server said rateLimited
    max_orders: int = 50  # orders in any `window` seconds, all hosts together
    window: float = 3 * 3600.0


@dataclass(frozen=True)
class HostState:
    """What the issuer knows about one host's certificate (shown by show --l7 and /metrics)."""
    host: str
    version: int = 0  # the served certificate's version (acme_names.py); 0: none yet
    not_after: float = 0.0  # its expiry (epoch seconds)
    issued_at: float = 0.0  # when the issuer last got one (its last renewal)
    last_error: str = ""  # why the last order failed ("": it did not, or a later one succeeded)
    last_error_at: float = 0.0  # when it failed (epoch seconds)
    failures: int = 0  # consecutive errors
    next_try: float = 0.0  # no order before this (backoff)

    def renewal_time(self, policy: Policy) -> float:
        """When this certificate should be replaced (0: now, there is none)."""
        return self.not_after - policy.renew_before if self.version else 0.0


def due(state: HostState, now: float, policy: Policy) -> bool:
    return now >= state.next_try and now >= state.renewal_time(policy)


def next_wake(states: Iterable[HostState], now: float, policy: Policy) -> Optional[float]:
    """The earliest time any host becomes due (None: no host)."""
    times = [max(s.next_try, s.renewal_time(policy)) for s in states]
    return max(now, min(times)) if times else None


def succeeded(state: HostState, now: float, version: int, not_after: float) -> HostState:
    return replace(state, version=version, not_after=not_after, issued_at=now, last_error="", last_error_at=0.0,
                   failures=0, next_try=0.0)


def failed(state: HostState, now: float, error: str, policy: Policy, error_type: str = "") -> HostState:
    failures = state.failures + 1
    wait = min(policy.cap, policy.first * 2 ** (failures - 1))
    if error_type == RATE_LIMITED:
        wait = max(wait, policy.rate_limited)
    return replace(state, last_error=error, last_error_at=now, failures=failures, next_try=now + wait)


def order_allowed(order_times: Iterable[float], now: float, policy: Policy) -> bool:
    """Whether one more order fits the issuer's own budget."""
    return sum(1 for t in order_times if now - t < policy.window) < policy.max_orders


def recent(order_times: Iterable[float], now: float, policy: Policy) -> list[float]:
    """The order times still inside the window (the rest can be forgotten)."""
    return [t for t in order_times if now - t < policy.window]
