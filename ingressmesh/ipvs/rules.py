"""The nftables part of the IPVS data plane: mark packets per front-end, refuse empty ones,
source-NAT what IPVS forwarded.  Like Docker's mangle MARK + `-m ipvs ... -j SNAT`, but in
ingressmesh's own table and mark range, so Docker's rules and ours can share a kernel.

A published port that keeps the client's address (plan_source_ip.py) has its mark in the set
`keep_source_marks`: what IPVS forwarded for it is accepted before the SNAT rule, so the task
sees the client; IPVS's own reply hook (FORWARD) undoes the DNAT of the replies that the task's
reply routes send back to this namespace, as the nftables backend's conntrack does."""
from __future__ import annotations

from ..nft.render import PORT_REFUSALS, REJECT_CHAIN, VIP_REFUSALS
from ..plan import NamespacePlan
from .desired import MARK_BASE, MARK_MASK

_DECLARATIONS = """\
  map vip_marks { type ipv4_addr : mark; }
  map port_marks { type inet_proto . inet_service : mark; }
  set vip_rejects { type ipv4_addr; }
  set port_rejects { type inet_proto . inet_service; }
  set keep_source_marks { type mark; }
""" + REJECT_CHAIN

_SNAT = """\
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    meta mark @keep_source_marks accept;
    meta mark & 0x%08x == 0x%08x snat ip to {snat_address}; }
""" % (MARK_MASK, MARK_BASE)

# A marked VIP packet is routed to this namespace itself (policy routing, see kernel.py),
# where IPVS takes it at input; a published port is already addressed to the namespace.
#
# Next to Docker's own IPVS mesh (a kernel with IPVS), Docker marks the same packets in the same
# namespaces: iptables mangle PREROUTING (published ports) and mangle INPUT (`-d VIP`), both at
# priority -150, and IPVS picks the fwmark service by the mark a packet carries when it reaches
# IPVS's own input hook (priority 98).  Two chains at one priority run in no defined order, so
# `mark_local` sets our mark again at input priority -149: after Docker's last MARK, before IPVS.
# That makes the takeover deterministic: every front-end we program goes to our IPVS service,
# whatever Docker (re)programs; removing our table hands the packets back to Docker's marks.
_LB = """\
  chain mark_in { type filter hook prerouting priority mangle; policy accept;
    meta l4proto { tcp, udp } meta mark set ip daddr map @vip_marks; }
  chain mark_local { type filter hook input priority mangle + 1; policy accept;
    meta l4proto { tcp, udp } meta mark set ip daddr map @vip_marks; }
""" + VIP_REFUSALS

_INGRESS = """\
  chain mark_in { type filter hook prerouting priority mangle; policy accept;
    fib daddr type local meta mark set meta l4proto . th dport map @port_marks; }
  chain mark_local { type filter hook input priority mangle + 1; policy accept;
    meta mark set meta l4proto . th dport map @port_marks; }
""" + PORT_REFUSALS


def skeleton(plan: NamespacePlan) -> str:
    """The fixed part of an IPVS-role table (ingress or lb); only addresses change it."""
    rules = {"lb": _LB, "ingress": _INGRESS}[plan.role]
    return _DECLARATIONS + rules + _SNAT.replace("{snat_address}", plan.snat_address)
