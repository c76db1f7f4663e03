"""The live half of bench/live_pipeline.py: a controller process and an agent process on
loopback, node reports posted as real agents would, latency, idle CPU and RSS read from /proc."""
from __future__ import annotations

import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import live_roles
from ingressmesh.agent.controller_client import ControllerClient
from ingressmesh.agent.reporter import Reporter

ROLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "live_roles.py")
TOKEN = "bench-live-pipeline-token-0123456789"
HEARTBEAT = 5.0
TICKS = os.sysconf("SC_CLK_TCK")


class _Process:
    """A role process whose stdout lines arrive on a queue; stopped by closing its stdin."""

    def __init__(self, *args: str, env: dict = None):
        self.proc = subprocess.Popen([sys.executable, ROLES, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.split())

    def line(self, timeout: float) -> list:
        return self.lines.get(timeout=timeout)

    def cpu_seconds(self) -> float:
        fields = open(f"/proc/{self.proc.pid}/stat", encoding="ascii").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def rss_mb(self) -> float:
        for line in open(f"/proc/{self.proc.pid}/status", encoding="ascii"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class _Nodes:
    """The nodes' agents as far as reports go: each node's own Reporter (the agent's), sending at
    once on a change and every HEARTBEAT s (by digest when nothing changed)."""

    def __init__(self, url: str, state, victim):
        self.state, self.victim = state, victim
        self.health = "healthy"
        self.client = ControllerClient([url], TOKEN)
        self.reports = {n: live_roles.node_report(state, n, {}) for n in live_roles.NODE_IDS}
        self.reporters = {n: Reporter(self.client, lambda n=n: {**self.reports[n], "sent_at": time.time()},
                                      heartbeat=HEARTBEAT) for n in live_roles.NODE_IDS}

    def start(self) -> None:
        for node_id, reporter in self.reporters.items():
            reporter.start()
            reporter.send(0, reporter.current())  # every node known before anything is timed

    def flip(self) -> str:
        """Flip the victim's health as its node's dockerd would report it; returns the new one."""
        self.health = "unhealthy" if self.health == "healthy" else "healthy"
        node_id = self.victim.node_id
        self.reports[node_id] = live_roles.node_report(self.state, node_id, {self.victim.id: self.health})
        self.reporters[node_id].changed()
        return self.health

    def stop(self) -> None:
        for reporter in self.reporters.values():
            reporter.stop()
        self.client.close()


def _until(agent: _Process, wanted, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        line = agent.line(max(0.1, deadline - time.monotonic()))
        if line[0] == "took" and wanted(line):
            return line


def _latencies(agent: _Process, nodes: _Nodes, changes: int, timeout: float) -> list[float]:
    found = []
    for _ in range(changes):
        started = time.monotonic()
        wanted = nodes.flip()
        line = _until(agent, lambda got: got[4] == wanted, timeout)
        found.append((float(line[2]) - started) * 1000)
        time.sleep(0.3)
    return found


def measure(services: int, changes: int, idle: float) -> dict:
    state = live_roles.synthetic_state(services)
    victim = live_roles.victim(state)
    timeout = 60 + services / 100
    with tempfile.NamedTemporaryFile("w", suffix=".token") as token:
        token.write(TOKEN)
        token.flush()
        controller = _Process("controller", str(services), token.name)
        agents = []
        try:
            port = controller.line(timeout)[1]
            url = f"http://127.0.0.1:{port}"
            nodes = _Nodes(url, state, victim)
            nodes.start()
            result = {}
            for path in ("delta", "whole"):
                agent = _Process("agent", url, token.name, *(["--whole"] if path == "whole" else []),
                                 env={"VICTIM": victim.id})
                agents.append(agent)
                _until(agent, lambda got: True, timeout)  # the whole snapshot first
                time.sleep(1)
                times = _latencies(agent, nodes, changes, timeout)
                result[path] = {"p50_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
                                "all_ms": [round(t, 1) for t in times]}
                if path == "delta":
                    result.update(_idle(controller, agent, idle))
                agent.stop()
            return result
        finally:
            if "nodes" in locals():
                nodes.stop()
            for agent in agents:
                agent.stop()
            controller.stop()


def _idle(controller: _Process, agent: _Process, seconds: float) -> dict:
    """CPU of both processes over `seconds` with nothing changing but heartbeats and ticks."""
    time.sleep(1)
    before = controller.cpu_seconds(), agent.cpu_seconds()
    time.sleep(seconds)
    after = controller.cpu_seconds(), agent.cpu_seconds()
    return {"controller_idle_cpu_pct": round(100 * (after[0] - before[0]) / seconds, 2),
            "agent_idle_cpu_pct": round(100 * (after[1] - before[1]) / seconds, 2),
            "controller_rss_mb": round(controller.rss_mb(), 1), "agent_rss_mb": round(agent.rss_mb(), 1)}
