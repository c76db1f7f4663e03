"""The rule shapes FakeNft accepts: exactly the rules render.py emits, each with the JSON
listing nft 1.0.6 prints for it.  Anything else is refused, so a new rule shape in the renderer
must be taught here (and checked against the kernel) before its rootless tests can pass.
"""
from __future__ import annotations

import re

from .errors import NftError

NAME = r"[A-Za-z_][A-Za-z0-9_]*"  # an nft set or chain name
_NAME = NAME


# `$set`, `$chain`, `$addr` and `$mod` in a template are filled from the rule's match.
_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
_L4 = [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]
_FIB = {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}
_TCP_UDP = {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": {"set": ["tcp", "udp"]}}}
_NOT_LO = {"match": {"op": "!=", "left": _DADDR, "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}
_NEW = {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}
_IN_L4 = {"match": {"op": "==", "left": {"concat": _L4}, "right": "@$set"}}
_NUMGEN = {"numgen": {"mode": "random", "mod": "$mod", "offset": 0}}
_GOTO, _DNAT = {"goto": {"target": "$chain"}}, {"dnat": {"addr": "$addr"}}
_PORT, _VIP = ("inet_proto", "inet_service"), ("ipv4_addr",)
_PORT_DNAT = rf"meta l4proto \. th dport @(?P<set>{_NAME}) dnat ip to (?P<addr>\S+)"

# (pattern, {group naming a set: the (key, value) types it must have}, JSON template)
_SHAPES = (
    (r"meta l4proto tcp reject with tcp reset", {}, [{"reject": {"type": "tcp reset"}}]),
    (r"reject", {}, [{"reject": {"type": "icmp", "expr": "port-unreachable"}}]),
    (rf"fib daddr type local meta l4proto \. th dport vmap @(?P<set>{_NAME})", {"set": (_PORT, ("verdict",))},
     [_FIB, {"vmap": {"key": {"concat": _L4}, "data": "@$set"}}]),
    (r"ip daddr != 127\.0\.0\.0/8 fib daddr type local " + _PORT_DNAT, {"set": (_PORT, ())},
     [_NOT_LO, _FIB, _IN_L4, _DNAT]),
    (r"fib daddr type local " + _PORT_DNAT, {"set": (_PORT, ())}, [_FIB, _IN_L4, _DNAT]),
    (rf"ct state new meta l4proto \. th dport @(?P<set>{_NAME}) goto (?P<chain>{_NAME})", {"set": (_PORT, ())},
     [_NEW, _IN_L4, _GOTO]),
    (rf"ct status dnat meta l4proto \. ip daddr \. th dport @(?P<set>{_NAME}) accept",
     {"set": (("inet_proto", "ipv4_addr", "inet_service"), ())},
     [{"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
      {"match": {"op": "==", "left": {"concat": [_L4[0], _DADDR, _L4[1]]}, "right": "@$set"}}, {"accept": None}]),
    (r"ct status dnat snat ip to (?P<addr>\S+)", {},
     [{"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}, {"snat": {"addr": "$addr"}}]),
    (rf"meta l4proto \{{ tcp, udp \}} ip daddr vmap @(?P<set>{_NAME})", {"set": (_VIP, ("verdict",))},
     [_TCP_UDP, {"vmap": {"key": _DADDR, "data": "@$set"}}]),
    (rf"ct state new meta l4proto \{{ tcp, udp \}} ip daddr @(?P<set>{_NAME}) goto (?P<chain>{_NAME})",
     {"set": (_VIP, ())}, [_NEW, _TCP_UDP, {"match": {"op": "==", "left": _DADDR, "right": "@$set"}}, _GOTO]),
    (rf"dnat ip to ip daddr \. numgen random mod (?P<mod>\d+) map @(?P<set>{_NAME})",
     {"set": (_VIP + ("integer",), _VIP)},
     [{"dnat": {"addr": {"map": {"key": {"concat": [_DADDR, _NUMGEN]}, "data": "@$set"}}}}]),
    (rf"dnat ip to meta l4proto \. th dport \. numgen random mod (?P<mod>\d+) map @(?P<set>{_NAME}) "
     rf": meta l4proto \. th dport map @(?P<targets>{_NAME})",
     {"set": (_PORT + ("integer",), _VIP), "targets": (_PORT, ("inet_service",))},
     [{"dnat": {"addr": {"map": {"key": {"concat": _L4 + [_NUMGEN]}, "data": "@$set"}},
                "port": {"map": {"key": {"concat": _L4}, "data": "@$targets"}}}}]),
)


def shape_of(text: str) -> tuple[re.Match, dict, list]:
    for pattern, sets, template in _SHAPES:
        if m := re.fullmatch(pattern, text):
            return m, sets, template
    raise NftError(f"unsupported rule (not a shape render.py emits): {text!r}")


def fill(template, m: re.Match):
    """A fresh copy of a JSON template with this rule's names, address and modulus."""
    if isinstance(template, dict):
        return {k: fill(v, m) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, m) for v in template]
    if template == "$mod":
        return int(m["mod"])
    return re.sub(r"\$(\w+)", lambda v: m[v[1]], template) if isinstance(template, str) else template


