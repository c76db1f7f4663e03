"""Let an agent that runs in a container write the network sysctls of Docker's namespaces, and
nothing else.

Docker mounts a container's /proc/sys read-only.  The agent turns `net.ipv4.ip_forward` on in
the ingress and load-balancer namespaces it enters (on a kernel without IPVS dockerd leaves it
off there) and sets the IPVS sysctls (net.ipv4.vs.*); /proc/sys/net shows the namespace of the
thread that opens it, so every setting the agent writes lives under /proc/sys/net.  So only that
subtree is made writable: /proc/sys/net is bind-mounted onto itself and that bind remounted
read-write (CAP_SYS_ADMIN, which setns needs anyway).  /proc/sys/kernel, vm, fs ... stay
read-only, and all of it happens in the agent's own mount namespace, never the host's.  On a
host (systemd) /proc/sys is writable and nothing is done.
"""
from __future__ import annotations

import logging
import subprocess
from typing import Callable, Optional

log = logging.getLogger(__name__)
MOUNTINFO = "/proc/self/mountinfo"
NET = "/proc/sys/net"


def covering_mount_read_only(mountinfo: str, path: str = NET) -> tuple[Optional[str], bool]:
    """(mount point, read-only) of the mount that `path` lies on: the longest mount point that
    is `path` or one of its parents, the last one mounted when several share it."""
    best, read_only = None, False
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) <= 5:
            continue
        point = fields[4]
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best):
                best, read_only = point, "ro" in fields[5].split(",")
    return best, read_only


def proc_sys_read_only(mountinfo: str) -> bool:
    """True when /proc/sys/net lies on a read-only mount (a container's /proc/sys)."""
    return covering_mount_read_only(mountinfo)[1]


def ensure_writable_sysctls(mountinfo_path: str = MOUNTINFO, run: Callable = subprocess.run) -> Optional[str]:
    """Make /proc/sys/net (only) writable when it is not; None when done or not needed, else why not."""
    try:
        with open(mountinfo_path, encoding="utf-8") as handle:
            point, read_only = covering_mount_read_only(handle.read())
    except OSError as err:
        return f"cannot read {mountinfo_path}: {err.strerror}"
    if not read_only:
        return None
    steps = [] if point == NET else [["mount", "--bind", NET, NET]]
    steps.append(["mount", "-o", "remount,bind,rw", NET])
    for argv in steps:
        done = run(argv, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            return (f"{NET} is read-only in this container and `{' '.join(argv)}` failed "
                    f"({done.stderr.strip()}): give the agent CAP_SYS_ADMIN (an AppArmor profile that denies "
                    "mount refuses it too), or set net.ipv4.ip_forward=1 in Docker's namespaces yourself")
    log.info("%s was read-only (a container): made it, and only it, writable in the agent's own mount namespace",
             NET)
    return None
