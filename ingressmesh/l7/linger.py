"""How long a stopping proxy keeps accepting: while the L4 mesh takes it out of every node.

A fixed wait after SIGTERM guesses the mesh's speed.  On a loaded node the mesh took longer than
the 2 s it was given, the proxy closed its listening sockets with a connection still in their
backlog, and that client got a reset.  So: serve at least `minimum` seconds, then until no new
connection has come for `quiet` seconds, at most `maximum` seconds after SIGTERM.  A quiet second
is a heuristic, not proof: a task that gets less than a connection a second may still be sent one
after it, which is what `minimum` is for.
"""
from __future__ import annotations

import enum
import time
from typing import Callable, Optional

QUIET = 1.0  # seconds without a new connection taken to mean no node sends any here any more
LOOK_EVERY = 0.1
READ_TIMEOUT = 1.0  # one look at HAProxy's counters never takes longer (nor past `maximum`)
FAILED_LOOKS = 3  # in a row, after a first good one, before the counters count as unreadable


class Linger(enum.Enum):
    QUIET = "quiet"  # no new connection for `quiet` seconds (or none at all up to `maximum`)
    MAXIMUM = "maximum"  # new connections still came at `maximum`
    UNKNOWN = "unknown"  # HAProxy's counters could not be read: only `minimum` was waited
    FIXED = "fixed"  # `maximum` is not above `minimum`: a fixed wait, counters not read


def linger(accepted: Callable[[float], Optional[int]], minimum: float, maximum: float, quiet: float = QUIET,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Linger:
    """Wait as above.  `accepted(timeout)` is the count of connections accepted so far, read
    within `timeout` seconds (None: unreadable).  Returns why it ended."""
    start = clock()
    sleep(max(0.0, minimum))
    if maximum <= minimum:
        return Linger.FIXED

    def look() -> Optional[int]:
        return accepted(max(0.01, min(READ_TIMEOUT, maximum - (clock() - start))))

    last = look()
    if last is None:
        return Linger.UNKNOWN
    quiet_since, came, failed = clock(), False, 0
    while True:
        now = clock()
        if now - quiet_since >= quiet:
            return Linger.QUIET
        if now - start >= maximum:
            return Linger.MAXIMUM if came else Linger.QUIET
        sleep(min(LOOK_EVERY, maximum - (now - start)))
        count = look()
        if count is None:
            failed += 1
            if failed >= FAILED_LOOKS:
                return Linger.UNKNOWN
            quiet_since = clock()  # not known to be quiet: keep serving
        elif count != last:  # more accepted (or a reload started the counters again): still in use
            last, quiet_since, came, failed = count, clock(), True, 0
        else:
            failed = 0
