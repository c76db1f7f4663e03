"""The HAProxy process: started in master-worker mode, checked configs, seamless reloads,
restarted when it dies, stopped softly.  The listening sockets may be the proxy's own, passed
in (`pass_fds`, rendered as `bind fd@N`: listeners.py), so a restart refuses no connection.

Reload = write the checked config, SIGUSR2 to the master, then wait on the master CLI
(`show proc`) until the reload count rises with no new failure, and on the admin socket until
the new worker answers — runtime commands sent to a worker that is going away would be lost.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Optional

from . import runtime
from .children import Children

log = logging.getLogger(__name__)

_MASTER = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.M)
_WORKER = re.compile(r"^(\d+)\s+worker\s+(\d+)\s", re.M)


class HAProxyError(RuntimeError):
    """HAProxy refused a config, failed to start or to reload."""


@dataclass(frozen=True)
class HAProxyFiles:
    workdir: str

    @property
    def config(self) -> str:
        return os.path.join(self.workdir, "haproxy.cfg")

    @property
    def master_socket(self) -> str:
        return os.path.join(self.workdir, "master.sock")

    @property
    def admin_socket(self) -> str:
        return os.path.join(self.workdir, "admin.sock")

    def map_file(self, generation: int) -> str:
        return os.path.join(self.workdir, f"routes-{generation}.map")


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def proc_state(master_socket: str) -> tuple[int, int, list[int]]:
    """(reloads, failed reloads, worker pids newest first) from the master CLI."""
    text = runtime.send(master_socket, "show proc")
    master = _MASTER.search(text)
    if master is None:
        raise runtime.RuntimeApiError(f"show proc: unexpected reply {text[:200]!r}")
    workers = sorted(((int(r), int(p)) for p, r in _WORKER.findall(text)))
    return int(master.group(2)), int(master.group(3)), [pid for _, pid in workers]


class HAProxy:
    # 60 s: a config of 10,000 TLS hosts took HAProxy over 10 s to load on a busy 2-core machine
    # (bench/l7.py); the wait ends at once if HAProxy exits.
    def __init__(self, files: HAProxyFiles, binary: str = "haproxy", start_timeout: float = 60.0,
                 children: Optional[Children] = None, pass_fds: tuple[int, ...] = ()):
        self.files, self.binary, self.start_timeout = files, binary, start_timeout
        self.children = children or Children()  # the proxy's, so its reaper leaves these alone
        self.pass_fds = pass_fds
        self.process: Optional[subprocess.Popen] = None
        self.reloads = 0
        self.restarts = 0

    def check(self, config_path: str) -> None:
        """`haproxy -c`; raises HAProxyError with HAProxy's own alert lines."""
        try:
            # The inherited sockets too: `bind fd@N` is checked against them.
            done = self.children.run([self.binary, "-c", "-f", config_path], timeout=60, pass_fds=self.pass_fds)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise HAProxyError(f"haproxy -c could not run: {err}") from None
        if done.returncode != 0:
            alerts = [line for line in (done.stdout + done.stderr).splitlines() if "ALERT" in line]
            raise HAProxyError("haproxy -c refused the config: " + " | ".join(alerts or [done.stderr[-500:]]))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def master_pid(self) -> Optional[int]:
        return self.process.pid if self.running else None

    def start(self) -> None:
        """Start the master on the config in place; returns once a worker answers."""
        for path in (self.files.master_socket, self.files.admin_socket):
            if os.path.exists(path):
                os.unlink(path)
        try:  # its own session: a Ctrl-C meant for the proxy must not hard-stop HAProxy
            self.process = self.children.popen([self.binary, "-W", "-db", "-S", self.files.master_socket,
                                                "-f", self.files.config], stdin=subprocess.DEVNULL,
                                               start_new_session=True, pass_fds=self.pass_fds)
        except OSError as err:
            raise HAProxyError(f"cannot start {self.binary}: {err}") from None
        try:
            self._wait_worker(lambda state: bool(state[2]), "start")
        except HAProxyError:
            self.kill()
            raise

    def reload(self) -> None:
        """Seamless reload onto the config in place (listeners pass to the new worker)."""
        if not self.running:
            raise HAProxyError("haproxy is not running")
        try:
            reloads, failed, _ = proc_state(self.files.master_socket)
        except runtime.RuntimeApiError as err:
            raise HAProxyError(f"cannot ask the master before a reload: {err}") from None
        os.kill(self.process.pid, signal.SIGUSR2)
        state = self._wait_worker(lambda s: s[0] > reloads or s[1] > failed, "reload")
        if state[1] > failed:
            raise HAProxyError("haproxy could not load the new config; the old worker keeps serving")
        self.reloads += 1

    def _wait_worker(self, ready, what: str) -> tuple[int, int, list[int]]:
        deadline = time.monotonic() + self.start_timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.running:
                raise HAProxyError(f"haproxy exited during {what} (status {self.process.returncode})")
            try:
                state = proc_state(self.files.master_socket)
                if ready(state) and state[2] and self._admin_pid() == state[2][0]:
                    return state
                last = state
            except runtime.RuntimeApiError as err:
                last = err
            time.sleep(0.02)
        raise HAProxyError(f"haproxy {what}: no new worker within {self.start_timeout:g} s (last: {last})")

    def _admin_pid(self) -> Optional[int]:
        found = re.search(r"^Pid: (\d+)", runtime.send(self.files.admin_socket, "show info"), re.M)
        return int(found.group(1)) if found else None

    @property
    def died(self) -> bool:
        """It was started and is not running any more (a crash, or killed)."""
        return self.process is not None and self.process.poll() is not None

    def soft_stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish (SIGUSR1), then hard stop after `timeout`."""
        if not self.running:
            return
        os.kill(self.process.pid, signal.SIGUSR1)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("haproxy still busy after %.0f s; stopping it", timeout)
            self.kill()

    def kill(self) -> None:
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
