"""HTTP through the L7 proxies from inside a lab namespace: bounded in count and time, lab
addresses only.  Each request is a new connection (as most load balancers' clients are)."""
from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from ..netns import Netns


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict
    body: str

    @property
    def hostname(self) -> str:
        if self.headers.get("x-hostname"):
            return self.headers["x-hostname"]
        return self.body.strip().splitlines()[0] if self.body.strip() else ""


def http_request(netns_path: str, address: str, port: int, host: str, path: str = "/",
                 timeout: float = 3.0) -> Answer:
    with Netns.from_ref(netns_path).entered():
        sock = socket.create_connection((address, port), timeout=timeout)
    with sock:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(data) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise OSError(f"bad answer from {address}:{port}: {head[:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(parts[1]), headers, body.decode(errors="replace"))


@dataclass
class L7LoadResult:
    ok: int = 0
    failures: list = field(default_factory=list)  # (monotonic time, target, what went wrong)
    seen: Counter = field(default_factory=Counter)


class L7Load:
    """Sequential requests for `host` over `targets` (round robin) until stopped; at most `limit`.
    Anything but a 200 counts as a failure."""

    def __init__(self, netns_path: str, targets: list[tuple[str, int]], host: str, pause: float = 0.01,
                 limit: int = 100000):
        self.netns_path, self.targets, self.host, self.pause, self.limit = netns_path, targets, host, pause, limit
        self.result = L7LoadResult()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="l7-load", daemon=True)

    def __enter__(self) -> "L7Load":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> L7LoadResult:
        self._stop.set()
        self.thread.join(30)
        return self.result

    def _run(self) -> None:
        for i in range(self.limit):
            if self._stop.is_set():
                return
            target = self.targets[i % len(self.targets)]
            try:
                answer = http_request(self.netns_path, *target, self.host)
                if answer.status == 200:
                    self.result.ok += 1
                    self.result.seen[answer.hostname] += 1
                else:
                    self.result.failures.append((time.monotonic(), target, f"HTTP {answer.status}: {answer.body[:80]!r}"))
            except OSError as err:
                self.result.failures.append((time.monotonic(), target, str(err)))
            self._stop.wait(self.pause)
