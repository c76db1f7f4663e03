"""Finding lab processes without names: by PID (+ start time), netns, cgroup or lab mounts."""
from __future__ import annotations

import glob
import os
import signal
import time
from typing import Iterable, Optional

CGROUP_ROOT = "/sys/fs/cgroup"


def start_time(pid: int) -> Optional[int]:
    """Clock ticks since boot when `pid` started; None if gone or a zombie. Pairs with a PID
    so a recycled PID is never mistaken for ours."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int, started: Optional[int] = None) -> bool:
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _inode(path: str) -> Optional[tuple[int, int]]:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def pids_in_netns(netns_paths: Iterable[str]) -> set[int]:
    """Processes whose network namespace is one of these (like `ip netns pids`)."""
    wanted = {key for key in (_inode(path) for path in netns_paths) if key}
    if not wanted:
        return set()
    return {pid for pid in all_pids() if _inode(f"/proc/{pid}/ns/net") in wanted}


def cgroup_dirs(pattern) -> list[str]:
    """Top-level cgroup dirs (v1 controllers, unified, or pure v2) whose name matches."""
    found = []
    for parent in [CGROUP_ROOT, *glob.glob(os.path.join(CGROUP_ROOT, "*"))]:
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        found += [os.path.join(parent, name) for name in names
                  if pattern.fullmatch(name) and os.path.isdir(os.path.join(parent, name))]
    return found


def pids_in_cgroups(dirs: Iterable[str]) -> set[int]:
    pids: set[int] = set()
    for top in dirs:
        for root, _subdirs, _files in os.walk(top):
            try:
                with open(os.path.join(root, "cgroup.procs"), encoding="ascii") as handle:
                    pids.update(int(line) for line in handle if line.strip())
            except OSError:
                continue
    return pids


def pids_with_mounts_under(path: str) -> set[int]:
    """Processes that see a mount whose source or target is below `path`. The lab's mounts
    exist only in its dockerds' private mount namespaces, so any such process is the lab's."""
    needle = path.rstrip("/") + "/"
    own = os.getpid()
    found = set()
    for pid in all_pids():
        if pid == own:
            continue
        try:
            with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        if needle in text:
            found.add(pid)
    return found


def mounts_on(targets: Iterable[str]) -> set[int]:
    """Processes that have something mounted on one of these mount points."""
    wanted = set(targets)
    found = set()
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as handle:
                if any(line.split()[4] in wanted for line in handle if len(line.split()) > 4):
                    found.add(pid)
        except OSError:
            continue
    return found


def kill(pids: Iterable[int], sig: int = signal.SIGKILL) -> int:
    """Signal each PID (never PID 1 or ourselves); returns how many were signalled."""
    count = 0
    for pid in set(pids) - {0, 1, os.getpid()}:
        try:
            os.kill(pid, sig)
            count += 1
        except (ProcessLookupError, PermissionError):
            continue
    return count


def wait_gone(pids: dict[int, Optional[int]], timeout: float) -> set[int]:
    """Wait until none of {pid: start time} is alive; returns those still alive."""
    deadline = time.monotonic() + timeout
    left = {pid for pid, started in pids.items() if alive(pid, started)}
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = {pid for pid in left if alive(pid, pids[pid])}
    return left
