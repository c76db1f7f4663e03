"""The IPVS backend: the same plans as the nft backend, carried out as Docker does it.

Per ingress/lb namespace: nft marks each front-end's packets (ingressmesh's own table and
mark range), one IPVS fwmark virtual service per front-end balances to the task addresses
(NAT), and nft source-NATs what IPVS forwarded.  Every apply dumps IPVS and changes only what
differs (so anything changed behind our back is repaired); the mark table is kept like the
nft backend's.  The host namespace has no IPVS: its plain DNAT comes from the nft backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..dataplane.forget import ConnectionForgetter
from ..netns import Netns
from ..nft import transaction
from ..nft.backend import NftBackend
from ..nft.errors import NftError
from ..nft.kernel import KernelNft
from ..nft.reader import state_from_json
from ..nft.state import TableState
from ..plan import NamespacePlan
from ..dataplane.view import REFUSED, SOURCE_KEPT, Row, port_frontend, vip_frontend
from .desired import allocate_marks, mark_elements, virtual_services
from .diff import diff, removed_addresses
from .kernel import IpvsError, KernelIpvs
from .rules import skeleton

__all__ = ["IpvsBackend", "IpvsError", "IpvsTimeouts"]


@dataclass(frozen=True)
class IpvsTimeouts:
    """IPVS connection timeouts in seconds, set explicitly in every namespace.

    Docker sets none, so the kernel's 900 s TCP idle timeout silently kills idle connections
    (moby#31208, #37822).  The defaults keep an idle TCP connection for a day (conntrack keeps
    established entries for 5 days), a closing one 2 minutes, and a UDP flow 5 minutes."""
    tcp: int = 86400
    tcpfin: int = 120
    udp: int = 300


class IpvsBackend:
    name = "ipvs"

    def __init__(self, netns: Netns, timeouts: IpvsTimeouts = IpvsTimeouts(),
                 ipvs: Optional[KernelIpvs] = None, nft: Optional[KernelNft] = None):
        self.netns = netns
        self.timeouts = timeouts
        self.ipvs = ipvs or KernelIpvs(netns)
        self.runner = nft or KernelNft(netns)
        self.host = NftBackend(self.runner)  # the host role is plain DNAT
        self.marks: Optional[dict] = None  # front-end -> mark, as the table holds them
        self.table: Optional[TableState] = None  # the mark table as last applied
        self.prepared = False
        self.forgetter = ConnectionForgetter(self.runner.forget_connections)

    def apply(self, plan: NamespacePlan) -> Optional[transaction.Transaction]:
        if plan.role == "host":
            return self.host.apply(plan)
        if plan.role == "container":
            raise IpvsError("the VIP fast path in container namespaces is nftables-only: "
                            "with --backend ipvs, containers reach VIPs through the LB namespace")
        for entry in plan.ports + plan.vips:  # refuse nonsense before touching the kernel
            for backend in entry.backends:
                if not 0 <= backend.port <= 65535:
                    raise IpvsError(f"{entry.service}: task {backend.task_id} port {backend.port} out of range")
        if not self.prepared:
            self.ipvs.prepare((self.timeouts.tcp, self.timeouts.tcpfin, self.timeouts.udp),
                              local_delivery=plan.role == "lb")
            self.prepared = True
        if self.marks is None:
            self.marks = self._marks_in_table()
        actual = self.ipvs.dump()
        marks = allocate_marks(plan, self.marks, frozenset(actual))
        desired = virtual_services(plan, marks)
        ops = diff(actual, desired)
        table = TableState(plan.role, skeleton(plan), frozenset(), mark_elements(plan, marks))
        if self.table is None or self.table.skeleton != table.skeleton:
            tx = transaction.full(table)
        else:
            added, removed = table.elements - self.table.elements, self.table.elements - table.elements
            tx = transaction.changes(list(added), list(removed), ()) if added or removed else None
        self.ipvs.run(op for op in ops if not op.removes)
        if tx is not None:
            try:
                self.runner.run_script(tx.script)
            except NftError:
                self.table = self.marks = None  # unknown now: rebuild and re-read next time
                raise
        self.table, self.marks = table, marks
        self.ipvs.run(op for op in ops if op.removes)
        self.forgetter.forget(removed_addresses(actual, desired))
        if tx is None and not ops:
            return None
        return transaction.Transaction(tx.script if tx else "", bool(tx and tx.full),
                                       (tx.added if tx else 0) + sum(not o.removes for o in ops),
                                       (tx.removed if tx else 0) + sum(o.removes for o in ops))

    def _marks_in_table(self) -> dict:
        """Marks an earlier run gave out, so a restart keeps every IPVS service as it is."""
        document = self.runner.list_table()
        if not document:
            return {}
        marks = {}
        for e in state_from_json(document).elements:
            if e.set == "vip_marks":
                marks[("vip",) + e.key] = int(e.value[0])
            elif e.set == "port_marks":
                marks[("port",) + e.key] = int(e.value[0])
        return marks

    def read(self) -> list[Row]:
        """The same rows the nft backend reports for the same plan."""
        document = self.runner.list_table()
        if not document:
            return []
        state = state_from_json(document)
        if not any(e.set in ("vip_marks", "port_marks") for e in state.elements) and \
                any(e.set == "published" for e in state.elements):
            return self.host.read()  # a host namespace: the nft backend's table
        services = self.ipvs.dump()
        kept = {int(e.key[0]) for e in state.elements if e.set == "keep_source_marks"}
        rows = []
        for e in state.elements:
            frontend = ("vip",) + e.key if e.set.startswith("vip") else ("port",) + e.key
            if e.set in ("vip_rejects", "port_rejects"):
                rows.append(Row(_frontend_text(frontend), e.comment, (), REFUSED))
            elif e.set in ("vip_marks", "port_marks"):
                kernel = services.get(int(e.value[0]))
                dests = kernel.dests if kernel else {}
                backends = tuple(sorted((f"{a}:{p}" if frontend[0] == "port" else a,
                                         "active" if w > 0 else "draining") for (a, p), w in dests.items()))
                note = "" if any(w > 0 for w in dests.values()) else REFUSED
                if not note and int(e.value[0]) in kept:
                    note = SOURCE_KEPT
                rows.append(Row(_frontend_text(frontend), e.comment, backends, note))
        return sorted(rows)

    def cleanup(self) -> None:
        services = self.ipvs.dump()
        self.runner.run_script(transaction.cleanup_script())
        self.ipvs.run(diff(services, {}))
        self.ipvs.unprepare()
        self.table, self.marks, self.prepared = None, None, False


def _frontend_text(frontend: tuple) -> str:
    return vip_frontend(frontend[1]) if frontend[0] == "vip" else port_frontend(frontend[1], frontend[2])

