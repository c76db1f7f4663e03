"""Deleting conntrack entries of task addresses that left the data plane, with retries.

Both backends need it: a connection conntrack still pins to a drained or dead task would
otherwise keep sending there (Docker's stale-backend bug, moby#33790).  A failed deletion is
logged and retried on the next call, because by then nothing else remembers the address.
"""
from __future__ import annotations

import logging
import subprocess
from typing import Callable

from ..netns import NetnsError

log = logging.getLogger(__name__)


class ConnectionForgetter:
    def __init__(self, forget_connections: Callable[[frozenset], None]):
        self.forget_connections = forget_connections
        self.pending: set = set()  # addresses whose deletion failed

    def forget(self, gone: set, in_use: Callable[[str], bool] = lambda address: False) -> None:
        """Forget `gone` (and earlier failures), except addresses that are `in_use` again."""
        pending = {a for a in gone | self.pending if not in_use(a)}
        if not pending:
            self.pending = set()
            return
        try:
            self.forget_connections(frozenset(pending))
            self.pending = set()
        except (NetnsError, OSError, subprocess.SubprocessError) as err:
            log.warning("could not delete conntrack entries of %s: %s", sorted(pending), err)
            self.pending = pending
