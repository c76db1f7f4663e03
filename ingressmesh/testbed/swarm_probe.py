"""Real traffic and kernel probes for the swarm lab: bounded in count and time, lab addresses only."""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from ..netns import Netns


def http_hostname(netns_path: str, address: str, port: int, timeout: float = 2.0, path: str = "/") -> str:
    """One HTTP/1.0 GET of `path` from inside a namespace; the body's first line (the task's hostname)."""
    with Netns.from_ref(netns_path).entered():
        sock = socket.create_connection((address, port), timeout=timeout)
    with sock:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
        raise OSError(f"bad answer from {address}:{port}{path}: {head[:80]!r}")
    return body.decode(errors="replace").strip().splitlines()[0]


def spread(netns_path: str, address: str, port: int, count: int, timeout: float = 2.0) -> Counter:
    return Counter(http_hostname(netns_path, address, port, timeout) for _ in range(count))


def kernel_map(netns_path: str, name: str) -> str:
    """The text of one of our maps in a namespace ('' when the table or map is absent)."""
    done = subprocess.run(["nsenter", f"--net={netns_path}", "nft", "list", "map", "ip", "ingressmesh", name],
                          capture_output=True, text=True, timeout=10)
    return done.stdout if done.returncode == 0 else ""


@dataclass
class LoadResult:
    ok: int = 0
    failures: list = field(default_factory=list)  # (monotonic time, target, error)
    seen: Counter = field(default_factory=Counter)


class LoadGenerator:
    """Sequential requests over `targets` (round robin) until stopped; at most `limit` requests."""

    def __init__(self, netns_path: str, targets: list[tuple[str, int]], pause: float = 0.01, limit: int = 100000,
                 probe=http_hostname):
        """`probe(netns, address, port)` names who answered or raises OSError (a failure)."""
        self.netns_path, self.targets, self.pause, self.limit = netns_path, targets, pause, limit
        self.probe = probe
        self.result = LoadResult()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="load", daemon=True)

    def __enter__(self) -> "LoadGenerator":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        self.thread.join(30)
        return self.result

    def _run(self) -> None:
        for i in range(self.limit):
            if self._stop.is_set():
                return
            target = self.targets[i % len(self.targets)]
            try:
                self.result.seen[self.probe(self.netns_path, *target)] += 1
                self.result.ok += 1
            except OSError as err:
                self.result.failures.append((time.monotonic(), target, str(err)))
            self._stop.wait(self.pause)
