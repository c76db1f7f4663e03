"""What Docker's namespaces need beyond the backend's tables, applied after each node plan:
VIP /32s on every lb endpoint (so containers' ARP for a VIP is answered) and the FORWARD
accepts for published ports in the host namespace.  Errors are per namespace, like apply's."""
from __future__ import annotations

from pyroute2.netlink.exceptions import NetlinkError

from ..dataplane.layout import Layout
from ..netns import NetnsError
from ..plan import NodePlan
from .forward_accept import ensure_jump, sync_forward_accept
from .vip_aliases import sync_vip_aliases


class DockerExtras:
    def __init__(self, open_forward: bool = True):
        self.open_forward = open_forward
        self.forwarded: object = None  # the last (gateway, ports) programmed, to skip no-op rewrites

    def apply(self, plan: NodePlan, layout: Layout, skip: set) -> dict:
        errors = {}
        for ns in plan.namespaces:
            if ns.key in skip:
                continue
            try:
                if ns.role == "lb":
                    sync_vip_aliases(layout.netns_for(ns), ns.snat_address, {v.vip for v in ns.vips})
                elif ns.role == "host" and self.open_forward:
                    wanted = (ns.forward_to, tuple(sorted((p.protocol, p.port) for p in ns.ports)))
                    if wanted != self.forwarded:
                        sync_forward_accept(ns.forward_to, list(wanted[1]))
                        self.forwarded = wanted
                    else:
                        ensure_jump()  # an iptables reload (dockerd restart) may have removed it
            except (OSError, ValueError, NetnsError, NetlinkError) as err:
                errors[ns.key] = f"{ns.role} extras: {err}"
        return errors
