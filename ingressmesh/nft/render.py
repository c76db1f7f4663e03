"""Render one NamespacePlan into the TableState the nftables backend should hold.

Static rules, dynamic maps (DESIGN §4, §10): a handful of fixed rules per role, and per
service only map elements — one per service, one per endpoint.  Load balancing picks a
backend with `numgen random mod N` in a shared chain `pick_<kind>_<N>`; there is one such
chain per distinct backend count N, never one per service or per endpoint.
"""
from __future__ import annotations

import re

from ..plan import NamespacePlan
from .state import Element, TableState

# Set and map declarations shared by every role (unused ones stay empty and cost nothing).
_DECLARATIONS = """\
  set published { type inet_proto . inet_service; }
  map port_services { type inet_proto . inet_service : verdict; }
  map port_backends { typeof meta l4proto . th dport . numgen random mod 2 : ip daddr; }
  map port_targets { type inet_proto . inet_service : inet_service; }
  set port_rejects { type inet_proto . inet_service; }
  set port_draining { type inet_proto . inet_service . ipv4_addr . inet_service; }
  map vip_services { type ipv4_addr : verdict; }
  map vip_backends { typeof ip daddr . numgen random mod 2 : ip daddr; }
  set vip_rejects { type ipv4_addr; }
  set vip_draining { type ipv4_addr . ipv4_addr; }
  chain reject_new { meta l4proto tcp reject with tcp reset; reject; }
"""

_HOST = """\
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local meta l4proto . th dport @published dnat ip to {forward_to}; }
  chain output { type nat hook output priority -100; policy accept;
    ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @published dnat ip to {forward_to}; }
"""

_INGRESS = """\
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local meta l4proto . th dport vmap @port_services; }
  chain filter_input { type filter hook input priority filter; policy accept;
    ct state new meta l4proto . th dport @port_rejects goto reject_new; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    ct status dnat snat ip to {snat_address}; }
"""

_LB = """\
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    meta l4proto { tcp, udp } ip daddr vmap @vip_services; }
  chain filter_forward { type filter hook forward priority filter; policy accept;
    ct state new meta l4proto { tcp, udp } ip daddr @vip_rejects goto reject_new; }
  chain filter_input { type filter hook input priority filter; policy accept;
    ct state new meta l4proto { tcp, udp } ip daddr @vip_rejects goto reject_new; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    ct status dnat snat ip to {snat_address}; }
"""

_ROLE_RULES = {"host": _HOST, "ingress": _INGRESS, "lb": _LB}


def skeleton(plan: NamespacePlan) -> str:
    rules = _ROLE_RULES[plan.role]
    rules = rules.replace("{forward_to}", plan.forward_to).replace("{snat_address}", plan.snat_address)
    return _DECLARATIONS + rules


def pick_chain_rule(name: str) -> str:
    """The single rule of a pick chain, derived from its name (`pick_vip_3`, `pick_port_12`)."""
    _, kind, count = name.split("_")
    if kind == "vip":
        return f"dnat ip to ip daddr . numgen random mod {int(count)} map @vip_backends"
    # Address and port come from two maps: nft 1.0.6 cannot add a rule that uses a map whose
    # value is typeof `ip daddr . th dport` once that map exists in the kernel.
    return (f"dnat ip to meta l4proto . th dport . numgen random mod {int(count)} map @port_backends"
            " : meta l4proto . th dport map @port_targets")


COMMENT_MAX = 128  # bytes; the kernel refuses longer element comments


def _comment(text: str) -> str:
    """Comments are for people reading `show`: never let a name fail or escape a transaction."""
    return re.sub(r"[^A-Za-z0-9_.:/ -]", "?", text)[:COMMENT_MAX]


def _port_elements(plan: NamespacePlan) -> tuple[set[Element], set[str]]:
    elements: set[Element] = set()
    chains: set[str] = set()
    for entry in plan.ports:
        key = (entry.protocol, entry.port)
        if plan.role == "host":
            elements.add(Element("published", key, comment=_comment(entry.service)))
            continue
        active = entry.active()
        if not active:
            elements.add(Element("port_rejects", key, comment=_comment(entry.service)))
        else:
            chain = f"pick_port_{len(active)}"
            chains.add(chain)
            elements.add(Element("port_services", key, (f"goto {chain}",), _comment(entry.service)))
            # Every task of a service listens on the same target port.
            elements.add(Element("port_targets", key, (active[0].port,), _comment(entry.service)))
            for index, backend in enumerate(active):
                elements.add(Element("port_backends", key + (index,), (backend.address,),
                                     _comment(f"{entry.service} {backend.task_id}")))
        for backend in entry.backends:
            if backend.state != "active":
                elements.add(Element("port_draining", key + (backend.address, backend.port),
                                     comment=_comment(f"{entry.service} {backend.task_id}")))
    return elements, chains


def _vip_elements(plan: NamespacePlan) -> tuple[set[Element], set[str]]:
    elements: set[Element] = set()
    chains: set[str] = set()
    for entry in plan.vips:
        active = entry.active()
        if not active:
            elements.add(Element("vip_rejects", (entry.vip,), comment=_comment(entry.service)))
        else:
            chain = f"pick_vip_{len(active)}"
            chains.add(chain)
            elements.add(Element("vip_services", (entry.vip,), (f"goto {chain}",), _comment(entry.service)))
            for index, backend in enumerate(active):
                elements.add(Element("vip_backends", (entry.vip, index), (backend.address,),
                                     _comment(f"{entry.service} {backend.task_id}")))
        for backend in entry.backends:
            if backend.state != "active":
                elements.add(Element("vip_draining", (entry.vip, backend.address),
                                     comment=_comment(f"{entry.service} {backend.task_id}")))
    return elements, chains


def desired_state(plan: NamespacePlan) -> TableState:
    port_elements, port_chains = _port_elements(plan)
    vip_elements, vip_chains = _vip_elements(plan)
    return TableState(role=plan.role, skeleton=skeleton(plan),
                      chains=frozenset(port_chains | vip_chains),
                      elements=frozenset(port_elements | vip_elements))
