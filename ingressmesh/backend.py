"""The interface every data-plane backend implements (nftables today, IPVS next).

A backend owns the ingressmesh state of one network namespace.  `apply` makes it equal to a
NamespacePlan atomically (raising, with the previous state intact, if the kernel refuses);
`read` returns what the kernel holds as VIP-to-task rows; `cleanup` removes only what
ingressmesh created.  The conformance suite runs the same behaviours against each backend.
"""
from __future__ import annotations

from typing import Optional, Protocol

from .plan import NamespacePlan
from .view import Row


class Backend(Protocol):
    name: str

    def apply(self, plan: NamespacePlan) -> Optional[object]:
        """Returns a description of what changed, or None when nothing had to."""

    def read(self) -> list[Row]: ...

    def cleanup(self) -> None: ...
