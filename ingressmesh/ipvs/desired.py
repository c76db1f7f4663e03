"""What one namespace's IPVS state and mark table should be, from a NamespacePlan (pure).

Each front-end with at least one backend (a VIP, or a protocol/published port) gets a fwmark
from ingressmesh's own range and one IPVS fwmark virtual service, NAT forwarding, real
servers = task addresses (port 0 for a VIP: the client's port is kept, as Docker does),
weight 1 when active and 0 while draining.  A front-end with no backend at all gets no
service and no mark, but a reject element, so new connections are refused at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ..nft.render import comment_text, entry_key
from ..nft.state import Element
from ..plan import ACTIVE, NamespacePlan

# ingressmesh's marks: MARK_BASE + n, n in 1..65535, away from Docker's (counting up from 256).
# Marks only matter inside the namespaces ingressmesh owns, where nothing else sets them.
MARK_BASE = 0x4D450000
MARK_MASK = 0xFFFF0000
MAX_MARKS = 0xFFFF


@dataclass(frozen=True)
class VirtualService:
    """One IPVS fwmark virtual service as ingressmesh wants it."""
    mark: int
    scheduler: str
    dests: Mapping[tuple[str, int], int]  # (address, port) -> weight
    frontend: tuple  # ("vip", address) or ("port", protocol, port)
    service: str  # the swarm service's name, for `show`


def frontend_key(entry) -> tuple:
    """("vip", address) or ("port", protocol, port): the same keys as the nft backend's."""
    return entry_key(entry)


def allocate_marks(plan: NamespacePlan, known: Mapping[tuple, int], in_use=frozenset()) -> dict[tuple, int]:
    """Front-end -> mark: keep every mark already given (known), give new ones the lowest free.

    Keeping marks stable across applies means a front-end's IPVS service is never re-created
    (which would reset its connection table) just because another service came or went.
    `in_use` are marks the kernel still has (IPVS services, mark elements): a mark is only free
    once its old service is gone, or a new front-end would share an old one's real servers."""
    wanted = [frontend_key(e) for e in plan.ports + plan.vips if e.backends]
    marks = {key: known[key] for key in wanted if key in known}
    used = set(marks.values()) | set(in_use) | set(known.values())
    free = (MARK_BASE + n for n in range(1, MAX_MARKS + 1) if MARK_BASE + n not in used)
    for key in wanted:
        if key not in marks:
            try:
                marks[key] = next(free)
            except StopIteration:
                raise ValueError(f"{plan.key}: more than {MAX_MARKS} front-ends need an IPVS mark") from None
    return marks


def virtual_services(plan: NamespacePlan, marks: Mapping[tuple, int]) -> dict[int, VirtualService]:
    services = {}
    for entry in plan.ports + plan.vips:
        if not entry.backends:
            continue
        key = frontend_key(entry)
        dests = MappingProxyType({(b.address, b.port): 1 if b.state == ACTIVE else 0 for b in entry.backends})
        services[marks[key]] = VirtualService(marks[key], entry.scheduler, dests, key, entry.service)
    return services


def mark_elements(plan: NamespacePlan, marks: Mapping[tuple, int]) -> frozenset:
    """The nft elements: front-end -> mark, rejects for front-ends with no task at all, and the
    marks of published ports that keep the client's address (not SNATed, rules.py)."""
    elements = []
    for entry in plan.ports + plan.vips:
        key, comment = frontend_key(entry), comment_text(entry.service)
        vip = key[0] == "vip"
        if entry.backends:
            elements.append(Element("vip_marks" if vip else "port_marks", key[1:], (marks[key],), comment))
            if not vip and entry.keep_source:
                elements.append(Element("keep_source_marks", (marks[key],), (), comment))
        else:
            elements.append(Element("vip_rejects" if vip else "port_rejects", key[1:], (), comment))
    return frozenset(elements)
