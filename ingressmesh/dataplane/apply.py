"""Apply a NodePlan: one backend per namespace, failures kept per namespace.

Every namespace is resolved before anything is programmed, and the host namespace is only
programmed when the ingress namespace it forwards to exists: a typo in a flag must not leave
the host redirecting published ports into nowhere.  A namespace whose transaction fails keeps
its last good state and the others still converge; each error names its namespace.
A namespace is known by its inode, so one that was deleted and re-created (Docker restarting
a sandbox) gets a fresh backend and a full rebuild instead of diffs against a table it lost.
"""
from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

from .layout import Layout
from ..netns import Netns, NetnsError
from ..ipvs.kernel import IpvsError
from ..nft.errors import NftError
from ..plan import NamespacePlan, NodePlan
from .udp_revive import forget_destinations, reviving

# DNAT only works where forwarding is on; Docker sets the same in its namespaces and host.
SYSCTLS = (("net.ipv4.ip_forward", "1"),)
_FAILURES = (NftError, IpvsError, NetnsError, OSError, ValueError, subprocess.SubprocessError)


def kernel_nft_backend(netns: Netns):
    from ..nft.backend import NftBackend
    from ..nft.kernel import KernelNft
    return NftBackend(KernelNft(netns))


@dataclass
class ApplyReport:
    changed: dict = field(default_factory=dict)  # namespace key -> (added, removed, full)
    errors: dict = field(default_factory=dict)  # namespace key -> message

    @property
    def ok(self) -> bool:
        return not self.errors


def _identity(netns: Netns) -> Optional[tuple]:
    """(device, inode) of the namespace file: changes when the namespace is re-created."""
    try:
        info = os.stat(netns.path or "/proc/self/ns/net")
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


class NodeApplier:
    """Keeps every namespace of one node in line with successive NodePlans."""

    def __init__(self, layout: Layout, make_backend: Callable[[Netns], object] = kernel_nft_backend,
                 workers: int = 1):
        self.layout = layout
        self.make_backend = make_backend
        self.workers = workers  # namespaces written at once (threads); each namespace by one thread
        self.backends: dict[str, tuple[tuple, Netns, object]] = {}
        self.applied: dict[str, NamespacePlan] = {}  # the last plan each namespace took

    def _backend(self, key: str, netns: Netns, identity: tuple, role: str = ""):
        known = self.backends.get(key)
        if known and known[0] == identity and known[1].path == netns.path:  # a new dockerd pid: new path
            return known[2]
        # New (or re-created) namespace: forwarding on, and a backend with no memory of it.  Not
        # in a container's own namespace: DNAT in its output hook needs no forwarding, and the
        # container's own setting (`--sysctl net.ipv4.ip_forward=0`) is its owner's.
        for name, value in SYSCTLS if role != "container" else ():
            if netns.sysctl(name) != value:
                netns.set_sysctl(name, value)
        backend = self.make_backend(netns)
        self.backends[key] = (identity, netns, backend)
        return backend

    def _resolve(self, plan: NodePlan, report: ApplyReport) -> dict:
        """namespace key -> (Netns, identity) for every namespace that exists."""
        found = {}
        for ns_plan in plan.namespaces:
            try:
                netns = self.layout.netns_for(ns_plan)
            except (KeyError, ValueError, IndexError) as err:
                report.errors[ns_plan.key] = (str(err) if ns_plan.role == "container"
                                              else f"bad namespace name template {self.layout.lb!r}: {err!r}")
                continue
            identity = _identity(netns)
            if identity is None:
                report.errors[ns_plan.key] = f"{netns.path}: network namespace does not exist"
                continue
            found[ns_plan.key] = (netns, identity)
        if "host" in found and "ingress" not in found:
            del found["host"]
            report.errors["host"] = "not programmed: the ingress namespace it forwards to is missing"
        return found

    def apply(self, plan: NodePlan) -> ApplyReport:
        report = ApplyReport()
        resolved = self._resolve(plan, report)
        revived: dict = {}  # container namespaces on the same networks share their entries: compared once
        todo = [ns_plan for ns_plan in plan.namespaces if ns_plan.key in resolved]
        if self.workers > 1 and len(todo) > 1:  # libnftables releases the GIL while it writes
            with ThreadPoolExecutor(self.workers, thread_name_prefix="apply") as pool:
                list(pool.map(lambda ns_plan: self._apply_one(ns_plan, resolved, report, revived), todo))
        else:
            for ns_plan in todo:
                self._apply_one(ns_plan, resolved, report, revived)
        for key, why in plan.held:
            report.errors[key] = why  # not applied, not removed: reported until the facts return
        wanted = {ns.key for ns in plan.namespaces} | {key for key, _ in plan.held}
        for key in sorted(set(self.backends) - wanted):
            identity, netns, backend = self.backends.pop(key)
            self.applied.pop(key, None)
            try:
                if _identity(netns) == identity:
                    backend.cleanup()
            except _FAILURES as err:
                report.errors[key] = f"{netns.path}: cleanup failed: {err}"
        return report

    def _apply_one(self, ns_plan: NamespacePlan, resolved: dict, report: ApplyReport, revived: dict) -> None:
        netns, identity = resolved[ns_plan.key]
        try:
            tx = self._backend(ns_plan.key, netns, identity, ns_plan.role).apply(ns_plan)
        except _FAILURES as err:
            report.errors[ns_plan.key] = f"{netns.path or '(host)'}: {err}"
            return
        except Exception as err:  # noqa: BLE001 - a container's namespace is its owner's: whatever
            if ns_plan.role != "container":  # it holds must not stop the other containers
                raise
            report.errors[ns_plan.key] = f"{netns.path}: {type(err).__name__}: {err}"
            return
        if tx is not None:
            report.changed[ns_plan.key] = (tx.added, tx.removed, tx.full)
        stale = self._reviving(self.applied.get(ns_plan.key), ns_plan, revived)
        if stale:
            forget_destinations(netns, stale)
        self.applied[ns_plan.key] = ns_plan

    @staticmethod
    def _reviving(old: Optional[NamespacePlan], new: NamespacePlan, memo: dict) -> list:
        if old is None or new.role != "container":
            return reviving(old, new)
        key = (id(old.vips), id(new.vips))  # both alive for the whole apply: ids are not reused
        if key not in memo:
            memo[key] = reviving(old, new)
        return memo[key]

    def backend(self, key: str) -> Optional[object]:
        found = self.backends.get(key)
        return found[2] if found else None
