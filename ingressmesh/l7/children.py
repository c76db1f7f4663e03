"""The proxy's child processes: the ones it starts (HAProxy, `haproxy -c`) and the orphans it
must reap.

The proxy is PID 1 of its container, and a child subreaper elsewhere: a HAProxy worker whose
master was killed, or a health-check probe's leftover, is re-parented to it and stays a zombie
until it is waited for (issue 20).  Reaping "any child" would also steal the exit status of a
process a `subprocess.Popen` still waits for (a refused `haproxy -c` would then look like a
success), so the processes started here are registered, under a lock, and only the others are
reaped.
"""
from __future__ import annotations

import ctypes
import glob
import logging
import os
import subprocess
import threading

log = logging.getLogger(__name__)
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphans of our descendants come to this process (as to PID 1) instead of to init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            return True
        log.warning("cannot become a child subreaper: %s", os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as err:
        log.warning("cannot become a child subreaper: %s", err)
    return False


def _state(pid: int) -> str:
    """The one-letter state of a process ('' once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def children_of(pid: int) -> set[int]:
    """Every child of `pid` (the children of each of its threads)."""
    found: set[int] = set()
    paths = glob.glob(f"/proc/{pid}/task/*/children")
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                found.update(int(word) for word in handle.read().split())
        except OSError:
            continue
    if paths:
        return found
    for stat in glob.glob("/proc/[0-9]*/stat"):  # a kernel without CONFIG_PROC_CHILDREN
        try:
            with open(stat, encoding="ascii", errors="replace") as handle:
                if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    return found


class Children:
    """Starts processes (registered) and reaps every other child that has exited."""

    def __init__(self):
        self._lock = threading.Lock()
        self._own: dict[int, subprocess.Popen] = {}
        self.reaped = 0

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        with self._lock:  # registered before reap() can look at it
            process = subprocess.Popen(argv, **kwargs)
            self._own[process.pid] = process
        return process

    def run(self, argv: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """Like subprocess.run(capture_output=True, text=True); raises TimeoutExpired."""
        process = self.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, **kwargs)
        with process:
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
        return subprocess.CompletedProcess(argv, process.returncode, out, err)

    def reap(self) -> list[tuple[int, int]]:
        """Waits for every exited child that is not a running Popen of ours: [(pid, status)]."""
        done: list[tuple[int, int]] = []
        with self._lock:
            self._own = {pid: p for pid, p in self._own.items() if p.returncode is None}
            for pid in sorted(children_of(os.getpid()) - self._own.keys()):
                if _state(pid) != "Z":
                    continue
                try:
                    found, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    continue
                if found == pid:
                    done.append((pid, status))
        self.reaped += len(done)
        return done

    def zombies(self) -> list[int]:
        """Children that exited and nobody waited for yet (Popen ones included)."""
        return sorted(pid for pid in children_of(os.getpid()) if _state(pid) == "Z")


def describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"signal {-code}" if code < 0 else f"status {code}"
