"""The interface every data-plane backend implements (nftables, and IPVS where the kernel has it).

A backend owns the ingressmesh state of one network namespace.  `apply` makes it equal to a
NamespacePlan (raising if the kernel refuses; the nft backend is atomic, the IPVS backend
converges: it re-reads the kernel every time, so the next apply finishes what one left);
`read` returns what the kernel holds as VIP-to-task rows; `cleanup` removes only what
ingressmesh created.  The conformance suite runs the same behaviours against each backend.
"""
from __future__ import annotations

from typing import Optional, Protocol

from ..plan import NamespacePlan
from .view import Row


class Backend(Protocol):
    name: str

    def apply(self, plan: NamespacePlan) -> Optional[object]:
        """Returns a description of what changed, or None when nothing had to."""

    def read(self) -> list[Row]: ...

    def cleanup(self) -> None: ...
