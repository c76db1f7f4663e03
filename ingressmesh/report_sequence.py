"""Where a node report stands in its node's order: the kernel's boot id and its boot clock.

The controller refuses a report older than the last one it accepted from the same node (a
replayed or delayed one: controller/report_order.py).  The agent's wall clock (`sent_at`) is no
order: it jumps back with NTP or an operator, and a node whose clock jumped back would be locked
out until it caught up.  CLOCK_BOOTTIME never goes back while the machine runs, is the same for
every process and container on the host (so a restarted agent, or a second agent during a
handover, continues the order), and a reboot starts a new boot id, which the controller takes as
a new order.
"""
from __future__ import annotations

import re
import time

BOOT_ID = "/proc/sys/kernel/random/boot_id"
BOOT_PATTERN = re.compile(r"^[0-9a-f-]{1,64}$")


def boot_id(path: str = BOOT_ID) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read().strip()


def sequence() -> dict:
    """{"boot": this boot's id, "ns": nanoseconds on the boot clock}: sent with every report."""
    return {"boot": boot_id(), "ns": time.clock_gettime_ns(time.CLOCK_BOOTTIME)}
