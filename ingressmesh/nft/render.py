"""Render one NamespacePlan into the TableState the nftables backend should hold.

Static rules, dynamic maps (DESIGN §4, §10): a handful of fixed rules per role, and per
service only map elements — one per service, one per endpoint.  Load balancing picks a
backend with `numgen random mod N` in a shared chain `pick_<kind>_<N>`; there is one such
chain per distinct backend count N, never one per service or per endpoint.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..plan import NamespacePlan, PortEntry, VipEntry
from .state import Element, TableState

# Refusing new connections to front-ends with no task: shared with the IPVS backend's table.
REJECT_CHAIN = """\
  chain reject_new { meta l4proto tcp reject with tcp reset; reject; }
"""
VIP_REFUSALS = """\
  chain filter_forward { type filter hook forward priority filter; policy accept;
    ct state new meta l4proto { tcp, udp } ip daddr @vip_rejects goto reject_new; }
  chain filter_input { type filter hook input priority filter; policy accept;
    ct state new meta l4proto { tcp, udp } ip daddr @vip_rejects goto reject_new; }
"""
PORT_REFUSALS = """\
  chain filter_input { type filter hook input priority filter; policy accept;
    ct state new meta l4proto . th dport @port_rejects goto reject_new; }
"""

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
""" + REJECT_CHAIN

_HOST = """\
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local meta l4proto . th dport @published dnat ip to {forward_to}; }
  chain output { type nat hook output priority -100; policy accept;
    ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport @published dnat ip to {forward_to}; }
"""

_INGRESS = """\
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    fib daddr type local meta l4proto . th dport vmap @port_services; }
""" + PORT_REFUSALS + """\
  set port_keep_source { type inet_proto . ipv4_addr . inet_service; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    ct status dnat meta l4proto . ip daddr . th dport @port_keep_source accept;
    ct status dnat snat ip to {snat_address}; }
"""

_LB = """\
  chain prerouting { type nat hook prerouting priority dstnat; policy accept;
    meta l4proto { tcp, udp } ip daddr vmap @vip_services; }
""" + VIP_REFUSALS + """\
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    ct status dnat snat ip to {snat_address}; }
"""

# The fast path (plan_containers.py): in a container's own namespace, its VIP packets are
# DNATed at the first packet in the output hook; no SNAT, replies come straight back.  A VIP
# not in the map goes on unchanged to the LB namespace, the fallback: one not programmed yet,
# opted out, or with no task (the LB namespace refuses it with a reset or an ICMP error, as the
# caller would see it there; a reject in a local output hook would fail the sender's own
# syscall with EPERM instead).  Conntrack only starts in a namespace once a table needs it, so
# a TCP connection opened before this table is seen as new at its next packet: only a SYN is
# DNATed here, and such a connection keeps going through the LB namespace as it began.
_CONTAINER = """\
  chain output { type nat hook output priority -100; policy accept;
    meta l4proto tcp tcp flags & (fin | syn | rst | ack) != syn return;
    meta l4proto { tcp, udp } ip daddr vmap @vip_services; }
"""

_ROLE_RULES = {"host": _HOST, "ingress": _INGRESS, "lb": _LB, "container": _CONTAINER}


def skeleton(plan: NamespacePlan) -> str:
    """The fixed part of a role's table; it only changes with the namespace's own addresses."""
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


def comment_text(text: str) -> str:
    """Comments are for people reading `show`: never let a name fail or escape a transaction."""
    return re.sub(r"[^A-Za-z0-9_.:/ -]", "?", text)[:COMMENT_MAX]


@dataclass(frozen=True, slots=True)
class Rendered:
    """What one service front-end (a VIP, or a published port) contributes to a table."""
    entry: object  # the plan entry it came from: an unchanged entry is skipped by identity
    elements: frozenset
    chain: str = ""  # the pick chain its services element jumps to, if any

    @property
    def addresses(self) -> list:
        """Task addresses its elements send to, once per element (a multiset)."""
        return [a for e in self.elements if (a := _element_address(e))]


def _element_address(e: Element) -> str:
    if e.set in ("vip_backends", "port_backends"):
        return str(e.value[0])
    if e.set == "vip_draining":
        return str(e.key[1])
    if e.set == "port_draining":
        return str(e.key[2])
    return ""


def element_addresses(elements) -> set:
    """Every task address a set of elements sends to (active or draining)."""
    return {a for e in elements if (a := _element_address(e))}


def entry_key(entry) -> tuple:
    """Identifies a front-end within one table: a VIP, or a protocol and published port."""
    if isinstance(entry, VipEntry):
        return ("vip", entry.vip)
    return ("port", entry.protocol, entry.port)


def _render_port(role: str, entry: PortEntry) -> Rendered:
    key = (entry.protocol, entry.port)
    service = comment_text(entry.service)
    if role == "host":
        return Rendered(entry, frozenset((Element("published", key, comment=service),)))
    elements, chain = [], ""
    active = entry.active()
    if not active:
        elements.append(Element("port_rejects", key, comment=service))
    else:
        chain = f"pick_port_{len(active)}"
        elements.append(Element("port_services", key, (f"goto {chain}",), service))
        # Every task of a service listens on the same target port.
        elements.append(Element("port_targets", key, (active[0].port,), service))
        elements += [Element("port_backends", key + (index,), (b.address,), comment_text(f"{entry.service} {b.task_id}"))
                     for index, b in enumerate(active)]
    elements += [Element("port_draining", key + (b.address, b.port), comment=comment_text(f"{entry.service} {b.task_id}"))
                 for b in entry.backends if b.state != "active"]
    if entry.keep_source:  # the task sees the client: its namespace routes replies back (plan_source_ip.py)
        elements += [Element("port_keep_source", (entry.protocol, b.address, b.port), comment=service)
                     for b in entry.backends]
    return Rendered(entry, frozenset(elements), chain)


def _render_vip(entry: VipEntry) -> Rendered:
    service = comment_text(entry.service)
    elements, chain = [], ""
    active = entry.active()
    if not active:
        elements.append(Element("vip_rejects", (entry.vip,), comment=service))
    else:
        chain = f"pick_vip_{len(active)}"
        elements.append(Element("vip_services", (entry.vip,), (f"goto {chain}",), service))
        elements += [Element("vip_backends", (entry.vip, index), (b.address,), comment_text(f"{entry.service} {b.task_id}"))
                     for index, b in enumerate(active)]
    elements += [Element("vip_draining", (entry.vip, b.address), comment=comment_text(f"{entry.service} {b.task_id}"))
                 for b in entry.backends if b.state != "active"]
    return Rendered(entry, frozenset(elements), chain)


def render_entry(role: str, entry) -> Rendered:
    """The elements (and pick chain) one plan entry needs in a table of this role."""
    return _render_vip(entry) if isinstance(entry, VipEntry) else _render_port(role, entry)


def plan_entries(plan: NamespacePlan) -> tuple:
    """A namespace plan's front-ends in plan order (the order the backend's fast path compares)."""
    return plan.ports + plan.vips


def desired_state(plan: NamespacePlan) -> TableState:
    """The whole table for a plan (full syncs, tests and the doctor)."""
    rendered = [render_entry(plan.role, entry) for entry in plan_entries(plan)]
    return TableState(role=plan.role, skeleton=skeleton(plan),
                      chains=frozenset(r.chain for r in rendered if r.chain),
                      elements=frozenset(e for r in rendered for e in r.elements))
