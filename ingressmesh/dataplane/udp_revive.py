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


def _came_alive(old: tuple, new: tuple) -> list:
    """VIP entries of `new` with active backends that had none (or no entry) in `old`.  An entry
    that is the very same object as before is skipped by identity: with 10,000 unchanged
    services (and one such comparison per container namespace) only the changed ones cost."""
    if old is new:
        return []
    by_vip = None
    found = []
    for i, entry in enumerate(new):
        before = old[i] if i < len(old) else None
        if before is entry:
            continue
        if before is None or before.vip != entry.vip:
            by_vip = by_vip if by_vip is not None else {e.vip: e for e in old}
            before = by_vip.get(entry.vip)
        if _active(entry) and not (before is not None and _active(before)):
            found.append(entry)
    return found


def reviving(old: Optional[NamespacePlan], new: NamespacePlan) -> list[Destination]:
    """UDP destinations in `new` that had no active backend (or no rule) in `old`."""
    if old is None:
        return []  # a fresh start knows no history: nothing is known to have come alive
    found = []
    if new.role in ("lb", "container"):
        found += [Destination(address=e.vip) for e in _came_alive(old.vips, new.vips)]
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
