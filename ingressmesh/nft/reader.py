"""Read an ingressmesh table back from `nft -j list table ip ingressmesh` output.

Used for `show` and drift checks only, never on the sync path (DESIGN §10: listing a large
ruleset takes seconds; the backend diffs against what it applied, kept in memory).
"""
from __future__ import annotations

from typing import Any

from .state import TABLE, Element, TableState

# Which role a table plays, told by which of its fixed chains exist.
_ROLE_BY_CHAIN = (("output", "host"), ("filter_forward", "lb"), ("filter_input", "ingress"))


def _plain(value: Any) -> tuple:
    if isinstance(value, dict) and "concat" in value:
        return tuple(value["concat"])
    if isinstance(value, dict) and "goto" in value:
        return (f"goto {value['goto']['target']}",)
    if isinstance(value, dict) and "jump" in value:
        return (f"jump {value['jump']['target']}",)
    return (value,)


def _unwrap(key: Any) -> tuple[Any, str]:
    if isinstance(key, dict) and "elem" in key:
        return key["elem"]["val"], key["elem"].get("comment", "")
    return key, ""


def _elements(name: str, raw: list) -> list[Element]:
    out = []
    for item in raw:
        if isinstance(item, list):  # map element: [key, value]
            key, comment = _unwrap(item[0])
            out.append(Element(name, _plain(key), _plain(item[1]), comment))
        else:
            key, comment = _unwrap(item)
            out.append(Element(name, _plain(key), (), comment))
    return out


def state_from_json(document: dict) -> TableState:
    """A TableState (skeleton unknown: "") from the JSON listing of our table."""
    elements: list[Element] = []
    chains: set[str] = set()
    all_chains: set[str] = set()
    for entry in document.get("nftables", []):
        for kind in ("set", "map"):
            obj = entry.get(kind)
            if obj and obj.get("table") == TABLE:
                elements += _elements(obj["name"], obj.get("elem", []))
        chain = entry.get("chain")
        if chain and chain.get("table") == TABLE:
            all_chains.add(chain["name"])
            if chain["name"].startswith("pick_"):
                chains.add(chain["name"])
    role = next((r for c, r in _ROLE_BY_CHAIN if c in all_chains), "")
    return TableState(role=role, skeleton="", chains=frozenset(chains), elements=frozenset(elements))
