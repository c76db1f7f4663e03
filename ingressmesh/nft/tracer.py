"""Walk one new packet through a FakeNft ruleset, so rule tests can assert what traffic does.

The tracer knows only the exact rule shapes `render.py` emits and raises `TraceError` on any
other rule text: a rule it silently skipped would make a test pass for the wrong reason.
`numgen random mod N` can pick any index, so every index is followed and the result holds
every possible outcome; an index with no map element (a hole) shows up as an outcome that
was not DNATed.

Hooks are modelled the way netfilter runs them for the first packet of a connection:
  from outside (hook_path="prerouting"): prerouting, then input if the (DNATed) destination
      is local, else forward and postrouting;
  locally generated (hook_path="output"): output and postrouting, then input if local.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Callable, Optional

from .fake import FakeChain, FakeNft
from .fake_rules import NAME as _NAME

FROM_OUTSIDE = "prerouting"
LOCALLY_GENERATED = "output"
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


class TraceError(RuntimeError):
    """A ruleset the tracer cannot follow faithfully (unknown rule, chain or set)."""


@dataclass(frozen=True)
class Packet:
    src: str
    proto: str
    dst: str
    dport: int
    dnat: bool = False  # ct status dnat
    snat: Optional[str] = None
    path: tuple = ()  # chains walked, for messages


@dataclass(frozen=True)
class Outcome:
    """One possible fate of the packet."""
    verdict: str  # "accept", "drop", "reject-tcp-reset" or "reject-icmp"
    packet: Packet


@dataclass(frozen=True)
class Trace:
    outcomes: tuple

    @property
    def verdict(self) -> str:
        return self._single({o.verdict for o in self.outcomes}, "verdict")

    def explain(self) -> str:
        """One line per outcome: verdict, where the packet ends up, and the chains it walked."""
        return "\n".join(f"{o.verdict}: {o.packet.dst}:{o.packet.dport} snat={o.packet.snat} "
                         f"via {' > '.join(o.packet.path)}" for o in self.outcomes)

    @property
    def destinations(self) -> frozenset:
        """Every (address, port) the packet can be DNATed to."""
        return frozenset((o.packet.dst, o.packet.dport) for o in self.outcomes if o.packet.dnat)

    @property
    def always_dnat(self) -> bool:
        return all(o.packet.dnat for o in self.outcomes)

    @property
    def snat(self) -> Optional[str]:
        return self._single({o.packet.snat for o in self.outcomes}, "SNAT address")

    def _single(self, values: set, what: str):
        if len(values) != 1:
            raise TraceError(f"the possible outcomes disagree on the {what}:\n{self.explain()}")
        return next(iter(values))


@dataclass(frozen=True)
class _Walk:
    fake: FakeNft
    local: frozenset

    def is_local(self, address: str) -> bool:
        return address in self.local or ipaddress.IPv4Address(address) in _LOOPBACK

    def lookup(self, table, name: str, key: tuple):
        fset = table.sets.get(name)
        if fset is None:
            raise TraceError(f"rule refers to @{name}, which table {table.name} does not have")
        found = fset.elements.get(key)
        return None if found is None else found[0]


def trace(fake: FakeNft, src: str, proto: str, dst: str, dport: int,
          hook_path: str = FROM_OUTSIDE, local: frozenset = frozenset()) -> Trace:
    """All possible outcomes for a new `proto` packet src -> dst:dport.

    `local` lists the addresses of the namespace the ruleset runs in (what `fib daddr type
    local` matches, and what decides input versus forward); 127.0.0.0/8 is always local.
    """
    for address in (src, dst, *local):
        ipaddress.IPv4Address(address)
    if proto not in ("tcp", "udp") or not 1 <= dport <= 65535:
        raise TraceError(f"cannot trace {proto}/{dport}: tcp or udp to ports 1-65535 only")
    walk = _Walk(fake, frozenset(local))
    packet = Packet(src, proto, dst, dport)
    if hook_path == FROM_OUTSIDE:
        branches = _hook(walk, "prerouting", [(packet, "accept")])
        done = [b for b in branches if b[1] != "accept"]
        into = [b for b in branches if b[1] == "accept" and walk.is_local(b[0].dst)]
        through = [b for b in branches if b[1] == "accept" and not walk.is_local(b[0].dst)]
        done += _hook(walk, "input", into) + _hook(walk, "postrouting", _hook(walk, "forward", through))
    elif hook_path == LOCALLY_GENERATED:
        branches = _hook(walk, "postrouting", _hook(walk, "output", [(packet, "accept")]))
        done = [b for b in branches if b[1] != "accept" or not walk.is_local(b[0].dst)]
        done += _hook(walk, "input", [b for b in branches if b[1] == "accept" and walk.is_local(b[0].dst)])
    else:
        raise TraceError(f"unknown hook_path {hook_path!r}: use {FROM_OUTSIDE!r} or {LOCALLY_GENERATED!r}")
    return Trace(tuple(Outcome(verdict, p) for p, verdict in done))


def _base_chains(walk: _Walk, hook: str) -> list:
    found = []
    for table in walk.fake.tables.values():
        for chain in table.chains.values():
            if chain.base and chain.base["hook"] == hook:
                if chain.base["type"] not in ("nat", "filter"):
                    raise TraceError(f"chain {chain.name}: unknown chain type {chain.base['type']!r}")
                found.append((chain.base["prio"], table, chain))
    return sorted(found, key=lambda item: item[0])


def _hook(walk: _Walk, hook: str, branches: list) -> list:
    """Run the accepted branches through every base chain on `hook`, lowest priority first."""
    for _, table, chain in _base_chains(walk, hook):
        nxt = []
        for packet, verdict in branches:
            if verdict != "accept":
                nxt.append((packet, verdict))
                continue
            for out, result in _rules(walk, table, chain, replace(packet, path=packet.path + (chain.name,))):
                nxt.append((out, result or chain.base["policy"]))
        branches = nxt
    return branches


def _rules(walk: _Walk, table, chain: FakeChain, packet: Packet, start: int = 0) -> list:
    """(packet, verdict) branches; verdict None means the chain ran off its end."""
    for index in range(start, len(chain.rules)):
        text = chain.rules[index].text
        steps = _step(walk, table, chain.name, text, packet)
        if steps is None:
            continue
        out = []
        for nxt, action in steps:
            if action == "continue":
                out += _rules(walk, table, chain, nxt, index + 1)
            elif action.startswith("goto "):
                target = table.chains.get(action[5:])
                if target is None or target.base is not None:
                    raise TraceError(f"chain {chain.name}: goto {action[5:]} is not a regular chain")
                # goto: running off the end of the target returns to the base chain's caller.
                out += _rules(walk, table, target, replace(nxt, path=nxt.path + (target.name,)))
            else:
                out.append((nxt, action))
        return out
    return [(packet, None)]


def _reject_tcp(walk, table, m, p):
    return [(p, "reject-tcp-reset")] if p.proto == "tcp" else None


def _fib_vmap(walk, table, m, p):
    verdict = walk.is_local(p.dst) and walk.lookup(table, m["set"], (p.proto, p.dport))
    return [(p, verdict[0])] if verdict else None


def _fib_dnat(walk, table, m, p):
    if m["nolo"] and ipaddress.IPv4Address(p.dst) in _LOOPBACK:
        return None
    if not walk.is_local(p.dst) or walk.lookup(table, m["set"], (p.proto, p.dport)) is None:
        return None
    return [(replace(p, dst=m["addr"], dnat=True), "accept")]


def _port_reject(walk, table, m, p):
    hit = walk.lookup(table, m["set"], (p.proto, p.dport)) is not None
    return [(p, f"goto {m['chain']}")] if hit else None  # ct state new: every traced packet is new


def _vip_vmap(walk, table, m, p):
    verdict = walk.lookup(table, m["set"], (p.dst,))
    return [(p, verdict[0])] if verdict else None  # proto is tcp or udp by construction


def _vip_reject(walk, table, m, p):
    return [(p, f"goto {m['chain']}")] if walk.lookup(table, m["set"], (p.dst,)) is not None else None


def _snat(walk, table, m, p):
    return [(replace(p, snat=m["addr"]), "accept")] if p.dnat else None


def _keep_source(walk, table, m, p):
    hit = p.dnat and walk.lookup(table, m["set"], (p.proto, p.dst, p.dport)) is not None
    return [(p, "accept")] if hit else None


def _pick_vip(walk, table, m, p):
    return _pick(m, p, lambda i: walk.lookup(table, m["set"], (p.dst, i)), lambda i: (p.dport,))


def _pick_port(walk, table, m, p):
    return _pick(m, p, lambda i: walk.lookup(table, m["set"], (p.proto, p.dport, i)),
                 lambda i: walk.lookup(table, m["targets"], (p.proto, p.dport)))


def _pick(m: re.Match, p: Packet, address: Callable, port: Callable) -> list:
    """One branch per index numgen can draw; a failed lookup makes the rule do nothing."""
    out = []
    for index in range(int(m["mod"])):
        dst, dport = address(index), port(index)
        if dst is None or dport is None:
            out.append((p, "continue"))  # a hole: the packet goes on un-DNATed
        else:
            out.append((replace(p, dst=dst[0], dport=dport[0], dnat=True), "accept"))
    return out


_SHAPES: tuple = (
    (r"meta l4proto tcp reject with tcp reset", _reject_tcp),
    (r"reject", lambda walk, table, m, p: [(p, "reject-icmp")]),
    (rf"fib daddr type local meta l4proto \. th dport vmap @(?P<set>{_NAME})", _fib_vmap),
    (rf"(?P<nolo>ip daddr != 127\.0\.0\.0/8 )?fib daddr type local meta l4proto \. th dport "
     rf"@(?P<set>{_NAME}) dnat ip to (?P<addr>[0-9.]+)", _fib_dnat),
    (rf"ct state new meta l4proto \. th dport @(?P<set>{_NAME}) goto (?P<chain>{_NAME})", _port_reject),
    (rf"ct status dnat meta l4proto \. ip daddr \. th dport @(?P<set>{_NAME}) accept", _keep_source),
    (r"ct status dnat snat ip to (?P<addr>[0-9.]+)", _snat),
    (rf"meta l4proto \{{ tcp, udp \}} ip daddr vmap @(?P<set>{_NAME})", _vip_vmap),
    (rf"ct state new meta l4proto \{{ tcp, udp \}} ip daddr @(?P<set>{_NAME}) goto (?P<chain>{_NAME})",
     _vip_reject),
    (rf"dnat ip to ip daddr \. numgen random mod (?P<mod>[1-9]\d*) map @(?P<set>{_NAME})", _pick_vip),
    (rf"dnat ip to meta l4proto \. th dport \. numgen random mod (?P<mod>[1-9]\d*) map @(?P<set>{_NAME}) "
     rf": meta l4proto \. th dport map @(?P<targets>{_NAME})", _pick_port),
)


def _step(walk: _Walk, table, chain: str, text: str, packet: Packet) -> Optional[list]:
    for pattern, rule in _SHAPES:
        m = re.fullmatch(pattern, text)
        if m:
            return rule(walk, table, m, packet)
    raise TraceError(f"chain {chain}: the tracer does not know the rule {text!r}")
