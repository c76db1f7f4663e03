"""Idle sockets against a daemon's HTTP port, and an agent-like client that must keep working.

`python -m ingressmesh.testbed.idle_flood HOST:PORT --count 2000 --sources A,B,… --seconds S` opens
`count` TCP connections spread over the source addresses, sends nothing, and for `seconds` opens
a new one for each the server closes (so the pressure stays on past the server's deadlines).
It prints one JSON line when all are open ("ready") and one at the end (how many it opened and
how many the server closed).  Bounded: at most `count` sockets at a time, at most `seconds`.

`AgentProbe` follows a controller's snapshot by long-poll (one kept-alive connection, like the
agent) and posts a node report every `interval` on a fresh connection (like an agent that has
just started), recording every outcome and how long it took.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import requests


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2+


def _open(host: str, port: int, source: str) -> Optional[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Bound to the source address only: the port is picked at connect, per destination (a
        # bind to port 0 first searches for a port free for every destination: slow by thousands).
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.settimeout(2)
        sock.connect((host, port))
        return sock
    except OSError:
        sock.close()
        return None


def flood(host: str, port: int, count: int, sources: list[str], seconds: float) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted,
                                                    hard))
    socks: dict = {}  # fileno -> (socket, source)
    opened = closed = failed = 0
    for i in range(count):
        source = sources[i % len(sources)]
        sock = _open(host, port, source)
        if sock is None:
            failed += 1
            continue
        socks[sock.fileno()] = (sock, source)
        opened += 1
    print(json.dumps({"ready": True, "open": len(socks), "failed": failed}), flush=True)
    end = time.monotonic() + seconds
    poller = select.poll()  # not select(): the sockets' numbers pass FD_SETSIZE
    for fileno in socks:
        poller.register(fileno, select.POLLIN)
    while time.monotonic() < end:
        for fileno, _ in poller.poll(200):
            sock, source = socks[fileno]
            try:
                gone = sock.recv(4096) == b""
            except OSError:
                gone = True
            if not gone:
                continue
            poller.unregister(fileno)
            del socks[fileno]
            sock.close()
            closed += 1
            again = _open(host, port, source)
            if again is not None:
                socks[again.fileno()] = (again, source)
                poller.register(again.fileno(), select.POLLIN)
                opened += 1
    for sock, _ in socks.values():
        sock.close()
    result = {"done": True, "opened": opened, "closed_by_server": closed, "failed": failed}
    print(json.dumps(result), flush=True)
    return result


@dataclass
class AgentProbe:
    """Follows and reports against `url` with `token` until stopped; `wrap` runs each thread's
    body (e.g. inside a network namespace)."""
    url: str
    token: str
    report: dict
    interval: float = 0.3
    wait: float = 1.0
    wrap: Callable = lambda body: body()
    versions: list = field(default_factory=list)  # (monotonic time, version) of each follow answer
    follow_errors: list = field(default_factory=list)
    reports: list = field(default_factory=list)  # (status or error text, seconds)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list = field(default_factory=list)

    def start(self) -> "AgentProbe":
        for body in (self._follow, self._report):
            thread = threading.Thread(target=self.wrap, args=(body,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.wait + 10)

    def _follow(self) -> None:
        session, since = requests.Session(), 0
        headers = {"Authorization": f"Bearer {self.token}"}
        while not self._stop.is_set():
            try:
                answer = session.get(f"{self.url}/v1/snapshot", params={"since": since, "wait": self.wait},
                                     headers=headers, timeout=(3, self.wait + 5))
                if answer.status_code == 200:
                    since = answer.json()["version"]
                    self.versions.append((time.monotonic(), since))
                elif answer.status_code != 304:
                    self.follow_errors.append(f"HTTP {answer.status_code}")
            except requests.RequestException as exc:
                self.follow_errors.append(type(exc).__name__)
                session.close()
                session = requests.Session()
                self._stop.wait(0.1)
        session.close()

    def _report(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Connection": "close"}
        while not self._stop.wait(self.interval):
            started = time.monotonic()
            try:
                answer = requests.post(f"{self.url}/v1/report", json={**self.report, "sent_at": time.time()},
                                       headers=headers, timeout=(3, 5))
                outcome = answer.status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            self.reports.append((outcome, time.monotonic() - started))


def start_flood(prefix: list, target: str, sources: list, count: int = 2000, seconds: float = 8.0):
    """This module as a process (argv `prefix` first, e.g. nsenter), once all its sockets are
    open: (process, its 'ready' line).  Bounded: each connect gives up after 2 s."""
    flood = subprocess.Popen([*prefix, sys.executable, "-m", "ingressmesh.testbed.idle_flood", target,
                              "--count", str(count), "--sources", ",".join(sources), "--seconds", str(seconds)],
                             stdout=subprocess.PIPE, text=True)
    return flood, json.loads(flood.stdout.readline() or "{}")


def probe_while_publishing(probe: AgentProbe, publish: Callable[[int], int], count: int = 15) -> list:
    """Starts `probe`, publishes a new version every 0.4 s, stops it; (time, version) published."""
    probe.start()
    published = []
    try:
        for i in range(count):
            time.sleep(0.4)
            published.append((time.monotonic(), publish(i)))
        time.sleep(1.5)
    finally:
        probe.stop()
    return published


def agent_problems(probe: AgentProbe, published: list) -> list:
    """What went wrong for the agent-like client: [] when it kept working.  Every version reached
    the follower within 1 s; every report was accepted, half within 0.5 s and all within 3.5 s
    (a new connection may wait for one SYN resent after 1 s when the accept queue was full)."""
    problems = [f"follow failed: {e}" for e in probe.follow_errors]
    for at, version in published:
        seen = [t for t, v in probe.versions if v >= version]
        if not seen or seen[0] - at >= 1.0:
            problems.append(f"version {version} not followed within 1 s")
    outcomes = [outcome for outcome, _ in probe.reports]
    if len(outcomes) < 10 or any(o != 204 for o in outcomes):
        problems.append(f"reports: {outcomes}")
    seconds = sorted(t for _, t in probe.reports)
    if seconds and (seconds[len(seconds) // 2] >= 0.5 or seconds[-1] >= 3.5):
        problems.append(f"report latencies (s): {[round(t, 3) for t in seconds]}")
    return problems


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--sources", default="127.0.0.1")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not 0 < args.count <= 20000 or not 0 < args.seconds <= 120:
        sys.exit("count must be 1..20000 and seconds 0..120")
    flood(host, int(port), args.count, args.sources.split(","), args.seconds)


if __name__ == "__main__":
    main()
