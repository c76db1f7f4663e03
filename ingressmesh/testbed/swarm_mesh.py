"""ingressmesh running on a lab swarm: a controller on node1, an agent on every node.

Each process runs in its node's network namespace (and the root mount namespace, so it reaches
Docker's namespaces through /proc/<dockerd pid>/root, as `--docker-pidfile` says).  PIDs are
kept so tests can stop and restart one process; logs go to the lab directory.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional

from ..lab import procs
from .mesh_endpoints import AGENT_PORT, CONTROLLER_PORT, MeshEndpoints
from ..daemon.token import generate_token, write_token

class SwarmMesh(MeshEndpoints):
    def __init__(self, lab, backend: str = "nftables", drain_grace: float = 10.0, agent_args: tuple = (),
                 stop_timeout: float = 20.0):
        """`agent_args`: more `ingressmesh agent` options for every agent (e.g. --on-stop cleanup);
        `stop_timeout`: how long a process may take to stop (stop())."""
        self.lab, self.backend, self.drain_grace, self.agent_args = lab, backend, drain_grace, tuple(agent_args)
        self.stop_timeout = stop_timeout
        self.dir = os.path.join(lab.config.lab_dir, "mesh")
        self.token_file = os.path.join(self.dir, "token")
        self.procs: dict[str, subprocess.Popen] = {}

    def log_path(self, name: str) -> str:
        return os.path.join(self.dir, f"{name}.log")

    def _spawn(self, name: str, n: int, argv: list[str], env: Optional[dict] = None) -> None:
        os.makedirs(self.dir, exist_ok=True)
        log = open(self.log_path(name), "a", encoding="utf-8")
        self.procs[name] = self.lab.popen_in_node(n, [sys.executable, "-m", "ingressmesh", *argv],
                                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                  env={**os.environ, **(env or {})})
        log.close()
        self._record()

    def start_daemon(self, name: str, n: int, argv: list[str], env: Optional[dict] = None) -> None:
        """Any other ingressmesh daemon (e.g. `l7 deploy --watch`), kept and stopped like the rest."""
        self._spawn(name, n, argv, env)

    @property
    def pid_file(self) -> str:
        return os.path.join(self.dir, "pids.json")

    def _record(self) -> None:
        """pid and start time per process, so a later `down` stops exactly these (never by name)."""
        alive = {name: [p.pid, procs.start_time(p.pid)] for name, p in self.procs.items() if p.poll() is None}
        with open(self.pid_file, "w", encoding="utf-8") as handle:
            json.dump(alive, handle)

    def recorded_alive(self) -> dict[str, int]:
        """Processes a previous run started that still run (same pid and start time)."""
        try:
            with open(self.pid_file, encoding="utf-8") as handle:
                recorded = json.load(handle)
        except (OSError, ValueError):
            return {}
        return {name: pid for name, (pid, start) in recorded.items() if procs.alive(pid, start)}

    def stop_recorded(self, timeout: float = 10.0) -> dict[str, int]:
        """Stop what a previous run started (SIGTERM, then SIGKILL after `timeout`)."""
        alive = self.recorded_alive()
        for pid in alive.values():
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.recorded_alive():
            time.sleep(0.1)
        for pid in self.recorded_alive().values():
            os.kill(pid, signal.SIGKILL)
        if os.path.exists(self.pid_file):
            os.unlink(self.pid_file)
        return alive

    def start_controller(self, env: Optional[dict] = None, name: str = "controller",
                         port: int = CONTROLLER_PORT) -> None:
        self._spawn(name, 1, ["controller", "--docker", f"unix://{self.lab.config.docker_sock(1)}",
                                      "--token-file", self.token_file,
                                      "--listen", f"{self.lab.node_address(1)}:{port}"], env)

    def start_agent(self, n: int, env: Optional[dict] = None, controllers: Optional[list] = None) -> None:
        config = self.lab.config
        urls = [arg for url in (controllers or [self.controller_url]) for arg in ("--controller", url)]
        self._spawn(f"agent{n}", n, [
            "agent", *urls, "--docker", f"unix://{config.docker_sock(n)}",
            "--token-file", self.token_file, "--exec-root", config.exec_root(n), "--docker-pidfile",
            config.pidfile(n), "--backend", self.backend, "--drain-grace", str(self.drain_grace),
            "--listen", f"{self.lab.node_address(n)}:{AGENT_PORT}", *self.agent_args], env)

    def up(self, timeout: float = 30.0) -> "SwarmMesh":
        os.makedirs(self.dir, exist_ok=True)
        if not os.path.exists(self.token_file):
            write_token(self.token_file, generate_token())
        self.start_controller()
        for n in self.lab.config.node_numbers:
            self.start_agent(n)
        self.wait_synced(timeout)
        return self

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: Optional[float] = None) -> None:
        """Signal, then SIGKILL after `timeout` (default stop_timeout: 20 s, the systemd units'
        TimeoutStopSec, which an agent's --on-stop cleanup must fit in).  A kill is said: it
        skips that policy."""
        timeout = self.stop_timeout if timeout is None else timeout
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within {timeout:g} s: killed")
            proc.kill()
            proc.wait(timeout)
        self._record()

    def down(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def tails(self, lines: int = 15) -> str:
        """The last lines of every process's log (for the CI output)."""
        out = ""
        for name in sorted(os.listdir(self.dir)) if os.path.isdir(self.dir) else ():
            if name.endswith(".log"):
                with open(os.path.join(self.dir, name), encoding="utf-8", errors="replace") as handle:
                    out += f"\n--- last lines of {name} ---\n" + "".join(handle.readlines()[-lines:])
        return out

    def remove_files(self) -> None:
        """Logs, token and pid file go with the lab (call after everything is stopped)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.rmdir(self.lab.config.lab_dir)  # only if nothing else is left in it
        except OSError:
            pass
