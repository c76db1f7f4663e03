"""Stale UDP conntrack entries for a front-end that just got its first backend.

A UDP sender with a fixed source port (syslog, statsd) that hits a VIP or a published port
before the service has a task creates an un-NATed conntrack entry, and every packet refreshes
it: the sender would never reach the service.  When a UDP front-end goes from no active
backend (or no rule at all) to some, its entries are deleted by destination, as kube-proxy
does, so the next packet is NATed afresh.  Only transitions this process saw are acted on.
"""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from typing import Optional

from ..netns import Netns, NetnsError
from ..plan import NamespacePlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Destination:
    address: Optional[str] = None  # a VIP (all its ports), or None: any address of the namespace
    port: Optional[int] = None     # a published port, or None: every port of the address

    def conntrack_args(self) -> list[str]:
        args = ["-p", "udp"]
        if self.address:
            args += ["--orig-dst", self.address]
        if self.port:
            args += ["--orig-port-dst", str(self.port)]
        return args


def _active(entry) -> int:
    return len(entry.active()) if hasattr(entry, "active") else 0


def reviving(old: Optional[NamespacePlan], new: NamespacePlan) -> list[Destination]:
    """UDP destinations in `new` that had no active backend (or no rule) in `old`."""
    if old is None:
        return []  # a fresh start knows no history: nothing is known to have come alive
    found = []
    if new.role in ("lb", "container"):
        before = {e.vip: _active(e) for e in old.vips}
        found += [Destination(address=e.vip) for e in new.vips if _active(e) and not before.get(e.vip)]
    elif new.role == "ingress":
        before = {e.port: _active(e) for e in old.ports if e.protocol == "udp"}
        found += [Destination(port=e.port) for e in new.ports
                  if e.protocol == "udp" and _active(e) and not before.get(e.port)]
    elif new.role == "host":
        before = {e.port for e in old.ports if e.protocol == "udp"}
        found += [Destination(port=e.port) for e in new.ports if e.protocol == "udp" and e.port not in before]
    return found


def forget_destinations(netns: Netns, destinations: list[Destination]) -> None:
    """`conntrack -D` per destination in the namespace (exit status 1: nothing matched)."""
    for destination in destinations:
        try:
            proc = netns.run(["conntrack", "-D", *destination.conntrack_args()], check=False, timeout=30)
        except (NetnsError, OSError, subprocess.SubprocessError) as err:
            log.warning("%s: cannot delete stale UDP entries for %s: %s", netns.name, destination, err)
            continue
        if proc.returncode not in (0, 1):
            log.warning("%s: conntrack -D %s failed: %s", netns.name, " ".join(destination.conntrack_args()),
                        (proc.stderr or "").strip()[:200])
