"""HTTP through the L7 proxies from inside a lab namespace: bounded in count and time, lab
addresses only.  Each request is a new connection (as most load balancers' clients are)."""
from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import NamedTuple, Optional

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
                 timeout: float = 3.0, headers: Optional[dict] = None) -> Answer:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    with Netns.from_ref(netns_path).entered():
        sock = socket.create_connection((address, port), timeout=timeout)
    with sock:
        sock.settimeout(timeout)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
        return _read_answer(sock, timeout, f"{address}:{port}")


def _read_answer(sock, timeout: float, where: str) -> Answer:
    """The whole answer (the server closes: Connection: close), bounded in time and size."""
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
        raise OSError(f"bad answer from {where}: {head[:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(parts[1]), headers, body.decode(errors="replace"))


class TlsAnswer(NamedTuple):
    subject: dict  # the served certificate's subject: commonName, organizationName
    protocol: str  # the ALPN protocol negotiated
    status: int  # 0 when h2 was negotiated (no HTTP/1 request is sent then)
    headers: dict
    body: str


def https_request(netns_path: str, address: str, port: int, host: str, cafile: str, path: str = "/",
                  alpn=("http/1.1",), timeout: float = 3.0) -> TlsAnswer:
    """One HTTPS GET with SNI `host`, the certificate checked against `cafile` (not its name:
    the caller reads the subject)."""
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    context.set_alpn_protocols(list(alpn))
    with Netns.from_ref(netns_path).entered():
        raw = socket.create_connection((address, port), timeout=timeout)
    with context.wrap_socket(raw, server_hostname=host) as tls:
        subject = {k: v for rdn in tls.getpeercert()["subject"] for k, v in rdn}
        protocol = tls.selected_alpn_protocol() or ""
        if protocol == "h2":
            return TlsAnswer(subject, protocol, 0, {}, "")
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = _read_answer(tls, timeout, f"{address}:{port}")
    return TlsAnswer(subject, protocol, answer.status, answer.headers, answer.body)


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


def proxy_update_done(lab, service: str) -> bool:
    """Whether the proxy service runs its latest spec: no rolling update under way.  `l7 deploy`
    updates it (start-first) each time labelled services need another network or secret, and
    until that ends some proxies may not reach them yet."""
    shown = lab.docker(1, "service", "inspect", "-f", "{{json .UpdateStatus}}", service, check=False)
    if shown.returncode != 0:
        return False
    status = json.loads(shown.stdout or "null")
    return status is None or status.get("State") in ("completed", "rollback_completed")
