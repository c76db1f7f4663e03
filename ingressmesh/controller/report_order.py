"""Refuses a node report older than the last one accepted from that node.

Each report carries `seq` = {boot, ns} (report_sequence.py): the node's boot id and its boot
clock when the agent sent it.  For one node:

- same boot as the last accepted report: accepted only when `ns` is larger.  A replayed or
  delayed report, or two requests overtaking each other, is refused: it would roll health back.
  The boot clock never goes back, so a node whose wall clock jumps back is never locked out, and
  an agent restarted on the same boot continues the order;
- another boot (the node rebooted, or a report replayed from before a reboot): accepted when its
  `sent_at` is later than the last accepted report's, or when nothing was accepted from the node
  for REBOOT_QUIET seconds (controller clock): a reboot takes longer than that, so a node whose
  clock is behind after a reboot waits at most that long, while a replay from an earlier boot is
  refused as long as the node's agent is reporting;
- no `seq` (an agent older than this check): accepted and not ordered, as before.

The memory lives in the controller's process: a restarted controller accepts the first report of
each node, and the order holds from there.  Not thread-safe: the caller holds its reports lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .server import ReportStale

REBOOT_QUIET = 15.0  # seconds: three agent heartbeats


@dataclass(frozen=True)
class _Last:
    boot: str
    ns: int
    sent_at: float
    accepted_at: float  # the controller's monotonic clock


class ReportOrder:
    def __init__(self, reboot_quiet: float = REBOOT_QUIET) -> None:
        self.reboot_quiet = reboot_quiet
        self._last: dict = {}  # node id -> _Last

    def admit(self, node_id: str, seq: Optional[dict], sent_at: float, now: float) -> None:
        """Records the report as the node's latest, or raises ReportStale saying why it is older."""
        if seq is None:
            return
        boot, ns = seq["boot"], seq["ns"]
        last = self._last.get(node_id)
        if last is not None and last.boot == boot and ns <= last.ns:
            raise ReportStale(f"older than the last report accepted from node {node_id!r} (boot clock {ns} ns, "
                              f"last {last.ns} ns): replayed or delayed, not applied")
        if (last is not None and last.boot != boot and sent_at <= last.sent_at
                and now - last.accepted_at < self.reboot_quiet):
            raise ReportStale(f"from boot {boot} of node {node_id!r}, sent before the last report accepted "
                              f"from its boot {last.boot} while that one is still reporting: replayed, not "
                              f"applied (a rebooted node is accepted after {self.reboot_quiet:g} s of quiet)")
        self._last[node_id] = _Last(boot, ns, sent_at, now)

    def forget(self, node_id: str) -> None:
        """The node left the swarm."""
        self._last.pop(node_id, None)
