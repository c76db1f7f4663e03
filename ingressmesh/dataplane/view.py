"""VIP-to-task rows as operators read them: every backend's `read()` returns these, so
`ingressmesh show` prints the same table whether the kernel runs nftables or IPVS, and tests
can compare rows directly."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Row:
    frontend: str  # "10.0.1.5 (tcp+udp, all ports)" or "tcp/8080"
    service: str
    backends: tuple[tuple[str, str], ...]  # (address[:port], "active" | "draining")
    note: str = ""  # e.g. "no eligible task: new connections refused"


REFUSED = "no eligible task: new connections refused"
SOURCE_KEPT = "client source addresses kept (no SNAT)"  # io.ingressmesh.lb.source_ip=preserve


def vip_frontend(vip: str) -> str:
    return f"{vip} (tcp+udp, all ports)"


def port_frontend(protocol: str, port) -> str:
    return f"{protocol}/{port}"
