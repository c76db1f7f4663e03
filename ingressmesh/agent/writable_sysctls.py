"""Let an agent that runs in a container write the sysctls of Docker's namespaces.

Docker mounts a container's /proc/sys read-only.  The agent turns `net.ipv4.ip_forward` on in
the ingress and load-balancer namespaces it enters (on a kernel without IPVS dockerd leaves it
off there), and /proc/sys/net shows the namespace of the thread that opens it, so it needs that
mount writable.  The agent container has CAP_SYS_ADMIN already (setns needs it), so it remounts
its own view of /proc/sys read-write: this changes the agent's mount namespace only, never the
host's.  On a host (systemd) /proc/sys is writable and nothing is done.
"""
from __future__ import annotations

import logging
import subprocess
from typing import Optional

log = logging.getLogger(__name__)
MOUNTINFO = "/proc/self/mountinfo"


def proc_sys_read_only(mountinfo: str) -> bool:
    """True when /proc/sys is its own mount point with the ro mount option (a container's)."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[4] == "/proc/sys":
            return "ro" in fields[5].split(",")
    return False


def ensure_writable_sysctls(mountinfo_path: str = MOUNTINFO) -> Optional[str]:
    """Remount a read-only /proc/sys read-write; None when done or not needed, else why not."""
    try:
        with open(mountinfo_path, encoding="utf-8") as handle:
            if not proc_sys_read_only(handle.read()):
                return None
    except OSError as err:
        return f"cannot read {mountinfo_path}: {err.strerror}"
    done = subprocess.run(["mount", "-o", "remount,bind,rw", "/proc/sys"], capture_output=True, text=True,
                          timeout=10)
    if done.returncode != 0:
        return (f"/proc/sys is read-only in this container and cannot be remounted ({done.stderr.strip()}): "
                "give the agent CAP_SYS_ADMIN, or set net.ipv4.ip_forward=1 in Docker's namespaces yourself")
    log.info("/proc/sys was read-only (a container): remounted read-write in the agent's own mount namespace")
    return None
