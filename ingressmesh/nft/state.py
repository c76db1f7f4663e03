"""What one ingressmesh nftables table holds, as plain comparable values.

A TableState is the unit the backend diffs: the static skeleton text (fixed per role and
addresses), the `pick_*` chains in use, and the set/map elements.  Only elements change with
the cluster, so a sync is a set difference of Elements.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TABLE = "ingressmesh"
FAMILY = "ip"


@dataclass(frozen=True, order=True, slots=True)
class Element:
    """One set or map element: key parts, value parts (empty for a set), and a comment."""
    set: str
    key: tuple
    value: tuple = ()
    comment: str = ""

    def nft(self) -> str:
        text = " . ".join(str(part) for part in self.key)
        if self.comment:
            text += f' comment "{self.comment}"'
        if self.value:
            text += " : " + " . ".join(str(part) for part in self.value)
        return text

    def nft_key(self) -> str:
        return " . ".join(str(part) for part in self.key)


@dataclass(frozen=True)
class TableState:
    role: str
    skeleton: str
    chains: frozenset = field(default_factory=frozenset)  # pick chain names, e.g. "pick_vip_3"
    elements: frozenset = field(default_factory=frozenset)

    def elements_of(self, name: str) -> list[Element]:
        return sorted(e for e in self.elements if e.set == name)
