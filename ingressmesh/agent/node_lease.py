"""Which agent owns this node's kernel state when two run at once (a start-first rolling update).

Every agent run with a lease directory (shared by all agents of one node: a host directory bound
into each agent container) holds a lock file there for its lifetime: `flock` is released by the
kernel when the process dies, whatever its PID namespace, so a held lock means a live agent, and
a file whose lock can be taken was left by a dead one.  File names start with the boot-time clock
(the same for every container of a host, and never stepped like the wall clock), so "older" and
"newer" mean started before or after.

A new agent waits for older ones to stop before it touches the kernel; an agent told to stop
leaves the rules in place when a newer one is waiting for them, and removes them otherwise.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import stat
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)
PREFIX = "agent-"
SUFFIX = ".lock"


class LeaseError(RuntimeError):
    """The lease directory cannot be used (not a directory, not writable)."""


class NodeLease:
    def __init__(self, directory: str):
        self.directory = directory
        self.name = ""
        self._handle = None

    def take(self) -> "NodeLease":
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            started = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            self.name = f"{PREFIX}{started:020d}-{secrets.token_hex(4)}{SUFFIX}"
            # Locked under a name nobody looks at, then renamed: a lock file is never seen unlocked
            # (another agent would take it for a dead one's and remove it).
            staging = os.path.join(self.directory, f".new-{secrets.token_hex(8)}")
            handle = open(staging, "x", encoding="ascii")
        except OSError as err:
            raise LeaseError(f"lease directory {self.directory}: {err.strerror or err}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            handle.write(f"pid {os.getpid()} (in its own pid namespace)\n")
            handle.flush()
            os.rename(staging, os.path.join(self.directory, self.name))
        except OSError as err:
            handle.close()
            with contextlib.suppress(OSError):
                os.unlink(staging)  # a full disk must not leave one file per restart
            raise LeaseError(f"lease directory {self.directory}: {err.strerror or err}") from None
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, self.name))
            self._handle.close()
            self._handle = None

    def _alive_others(self) -> list[str]:
        """Names of the other agents' lock files still held; stale files are removed."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        alive = []
        for name in names:
            if name == self.name or not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
                continue
            path = os.path.join(self.directory, name)
            try:
                # Never follow a link, never block on a FIFO: only regular files are leases.
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue  # gone while we looked (it stopped), or not something we opened
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    alive.append(name)
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(path)  # we hold its lock: its agent is gone
            finally:
                os.close(fd)
        return alive

    def older_alive(self) -> list[str]:
        return [name for name in self._alive_others() if name < self.name]

    def newer_alive(self) -> list[str]:
        return [name for name in self._alive_others() if name > self.name]

    def wait_for_older(self, stop: threading.Event, poll: float = 0.2, timeout: Optional[float] = None) -> bool:
        """Block until no older agent runs (True), or `stop` is set or `timeout` passes (False)."""
        said: Optional[list] = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            older = self.older_alive()
            if not older:
                if said:
                    log.info("the agent that ran before on this node has stopped: taking over its rules")
                return True
            if said != older:
                log.info("waiting for the agent that runs on this node (%s) to stop before taking over",
                         ", ".join(older))
                said = older
            stop.wait(poll)
        return False
