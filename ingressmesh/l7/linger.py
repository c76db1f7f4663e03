"""How long a stopping proxy keeps accepting: until the L4 mesh has taken it out of every node.

A fixed wait after SIGTERM guesses the mesh's speed; on a loaded node the mesh took longer than
the 2 s it was given, the proxy closed its listening sockets with a connection still in their
backlog, and that client got a reset.  So: serve at least `minimum` seconds, then until no new
connection has arrived for `quiet` seconds (nothing routes here any more), at most `maximum`.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

QUIET = 1.0  # seconds without a new connection that say no node sends any here
LOOK_EVERY = 0.1


def linger(accepted: Callable[[], Optional[int]], minimum: float, maximum: float, quiet: float = QUIET,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> str:
    """Wait as above; `accepted()` is the count of connections accepted so far (None: unknown,
    and then only `minimum` is waited).  Returns why it ended: "quiet", "maximum", "unknown", or
    "fixed" when `maximum` is not above `minimum` (a fixed wait was asked for)."""
    start = clock()
    sleep(max(0.0, minimum))
    if maximum <= minimum:
        return "fixed"
    last = accepted()
    if last is None:
        return "unknown"
    quiet_since = clock()
    while clock() - quiet_since < quiet:
        if clock() - start >= maximum:
            return "maximum"
        sleep(LOOK_EVERY)
        count = accepted()
        if count is None:
            return "unknown"
        if count != last:  # more accepted (or a reload restarted the counters): still in use
            last, quiet_since = count, clock()
    return "quiet"
