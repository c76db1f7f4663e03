"""Apply a NodePlan: one backend per namespace, sysctls set once, failures kept per namespace.

A namespace whose transaction fails keeps its last good state and the others still converge;
the caller gets every error back, each naming its namespace.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .layout import Layout
from .netns import Netns, NetnsError
from .nft.backend import KernelNft, NftBackend, NftError
from .plan import NodePlan

# Forwarding must be on wherever we DNAT; liberal TCP tracking keeps long-lived flows that
# saw a window probe across a rule change from being dropped as INVALID.
SYSCTLS = (("net.ipv4.ip_forward", "1"),
           ("net.netfilter.nf_conntrack_tcp_be_liberal", "1"))


def kernel_nft_backend(netns: Netns) -> NftBackend:
    return NftBackend(KernelNft(netns))


@dataclass
class ApplyReport:
    changed: dict = field(default_factory=dict)  # namespace key -> (added, removed, full)
    errors: dict = field(default_factory=dict)  # namespace key -> message

    @property
    def ok(self) -> bool:
        return not self.errors


class NodeApplier:
    """Keeps every namespace of one node in line with successive NodePlans."""

    def __init__(self, layout: Layout, make_backend: Callable[[Netns], object] = kernel_nft_backend):
        self.layout = layout
        self.make_backend = make_backend
        self.backends: dict[str, tuple[Netns, object]] = {}

    def _backend(self, key: str, netns: Netns):
        known = self.backends.get(key)
        if known and known[0] == netns:
            return known[1]
        for name, value in SYSCTLS:
            if netns.sysctl(name) is not None:
                netns.set_sysctl(name, value)
        backend = self.make_backend(netns)
        self.backends[key] = (netns, backend)
        return backend

    def apply(self, plan: NodePlan) -> ApplyReport:
        report = ApplyReport()
        for ns_plan in plan.namespaces:
            netns = self.layout.netns_for(ns_plan)
            try:
                tx = self._backend(ns_plan.key, netns).apply(ns_plan)
            except (NftError, NetnsError, OSError) as err:
                report.errors[ns_plan.key] = f"{netns.path or '(host)'}: {err}"
                continue
            if tx is not None:
                report.changed[ns_plan.key] = (tx.added, tx.removed, tx.full)
        wanted = {ns.key for ns in plan.namespaces}
        for key in sorted(set(self.backends) - wanted):
            netns, backend = self.backends.pop(key)
            try:
                if netns.exists():
                    backend.cleanup()
            except (NftError, NetnsError, OSError) as err:
                report.errors[key] = f"{netns.path}: cleanup failed: {err}"
        return report

    def backend(self, key: str) -> Optional[object]:
        found = self.backends.get(key)
        return found[1] if found else None
