"""The kernel's neighbour (ARP/NDP) tables, sized for what the lab runs.

The lab's nodes share one kernel, and its neighbour table is one table for every network
namespace: its gc_thresh limits exist only in the root namespace (a node's netns has no
`neigh/default` sysctls).  Every container, load-balancer and ingress namespace of every node
holds entries there, so 500 services on the lab passed the default hard limit (gc_thresh3 1024:
"neighbor table overflow", requests timing out).  Docker's overlay driver raises these limits to
the values below on a real host, but from a node's netns it cannot; the lab does it for them.

This is the one thing the lab sets outside its own namespaces.  It only ever raises a limit,
to what Docker sets on any host with an overlay network, and records what it found in the lab
state; `lab down` leaves the limits raised: another lab may be up (they share the kernel's
table too), and a higher limit takes nothing away (entries cost memory only when they exist).
"""
from __future__ import annotations

import os

from .state import LabState

PROC_SYS = "/proc/sys"
# Docker's own (libnetwork's overlay driver): enough for tens of thousands of tasks' entries.
LIMITS = {"gc_thresh1": 8192, "gc_thresh2": 49152, "gc_thresh3": 65536}
FAMILIES = ("ipv4", "ipv6")
STATE_KEY = "neighbour_limits"


def _path(proc_sys: str, family: str, name: str) -> str:
    return os.path.join(proc_sys, "net", family, "neigh", "default", name)


def _read(path: str) -> int:
    with open(path, encoding="ascii") as handle:
        return int(handle.read().strip())


def _write(path: str, value: int) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(f"{value}\n")


def current(proc_sys: str = PROC_SYS) -> dict[str, int]:
    """{"ipv4.gc_thresh3": 1024, ...} for every family whose table the kernel has."""
    return {f"{family}.{name}": _read(_path(proc_sys, family, name)) for family in FAMILIES
            for name in LIMITS if os.path.exists(_path(proc_sys, family, name))}


def raise_limits(state: LabState, proc_sys: str = PROC_SYS) -> dict[str, int]:
    """Raise each limit below LIMITS to it (hard limit first, so thresh1 <= thresh2 <= thresh3
    holds all along); the values found are kept in the lab state.  Returns what was raised."""
    found, raised = current(proc_sys), {}
    for family in FAMILIES:
        for name in sorted(LIMITS, reverse=True):
            key = f"{family}.{name}"
            if key in found and found[key] < LIMITS[name]:
                _write(_path(proc_sys, family, name), LIMITS[name])
                raised[key] = found[key]
    state.set(STATE_KEY, raised)
    return raised
