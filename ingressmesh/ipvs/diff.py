"""IPVS operations that take what the kernel has to what the plan wants (pure).

Only fwmark services in ingressmesh's mark range are ever touched: Docker's own IPVS
services (marks from 256) on the same kernel are left alone.  Additions come first and
removals last, so a mark that the nft rules start using always finds its service.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .desired import MARK_BASE, MARK_MASK, VirtualService


@dataclass(frozen=True)
class KernelService:
    """One fwmark virtual service as the kernel reports it."""
    mark: int
    scheduler: str
    dests: Mapping[tuple[str, int], int]  # (address, port) -> weight


@dataclass(frozen=True, order=True)
class Op:
    verb: str  # add_service, set_service, add_dest, set_dest, del_dest, del_service
    mark: int
    scheduler: str = ""
    dest: tuple = ()  # (address, port)
    weight: int = 0

    @property
    def removes(self) -> bool:
        return self.verb.startswith("del_")


def ours(mark: int) -> bool:
    return mark & MARK_MASK == MARK_BASE and mark != MARK_BASE


def diff(actual: Mapping[int, KernelService], desired: Mapping[int, VirtualService]) -> list[Op]:
    """Additions and updates first (services, then their dests), then removals."""
    adds, removes = [], []
    for mark in sorted(desired):
        want = desired[mark]
        have = actual.get(mark)
        if have is None:
            adds.append(Op("add_service", mark, want.scheduler))
            have_dests: Mapping = {}
        else:
            if have.scheduler != want.scheduler:
                adds.append(Op("set_service", mark, want.scheduler))
            have_dests = have.dests
        for dest in sorted(want.dests):
            if dest not in have_dests:
                adds.append(Op("add_dest", mark, dest=dest, weight=want.dests[dest]))
            elif have_dests[dest] != want.dests[dest]:
                adds.append(Op("set_dest", mark, dest=dest, weight=want.dests[dest]))
        removes += [Op("del_dest", mark, dest=dest) for dest in sorted(have_dests) if dest not in want.dests]
    removes += [Op("del_service", mark) for mark in sorted(actual) if ours(mark) and mark not in desired]
    return adds + removes


def removed_addresses(actual: Mapping[int, KernelService], desired: Mapping[int, VirtualService]) -> set[str]:
    """Task addresses no virtual service uses any more (their connections are to be forgotten)."""
    before = {a for s in actual.values() if ours(s.mark) for a, _ in s.dests}
    after = {a for s in desired.values() for a, _ in s.dests}
    return before - after
