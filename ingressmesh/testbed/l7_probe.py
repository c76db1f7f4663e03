"""HTTP through the L7 proxies from inside a lab namespace: bounded in count and time, lab
addresses only.  Each request is a new connection (as most load balancers' clients are)."""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from ..netns import Netns
from .swarm_probe import LoadGenerator


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


class L7Load(LoadGenerator):
    """Sequential requests for `host` over `targets` (round robin) until stopped; at most `limit`.
    Anything but a 200 counts as a failure."""

    def __init__(self, netns_path: str, targets: list[tuple[str, int]], host: str, pause: float = 0.01,
                 limit: int = 100000):
        def probe(netns: str, address: str, port: int) -> str:
            answer = http_request(netns, address, port, host)
            if answer.status != 200:
                raise OSError(f"HTTP {answer.status}: {answer.body[:80]!r}")
            return answer.hostname
        super().__init__(netns_path, targets, pause, limit, probe=probe)
