"""The JSON document FakeNft returns for `list_table`, shaped like `nft -j list table` (1.0.6)."""
from __future__ import annotations

from .fake_rules import fill, shape_of
from .state import FAMILY

_METAINFO = {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}

def _json_value(types: tuple, value: tuple):
    if types == ("verdict",):
        return {"goto": {"target": value[0].split(" ", 1)[1]}}
    return {"concat": list(value)} if len(value) > 1 else value[0]


def _json_set(table, fset) -> dict:
    body = {"family": FAMILY, "name": fset.name, "table": table.name,
            "type": list(fset.key_types) if len(fset.key_types) > 1 else fset.key_types[0],
            "handle": fset.handle}
    if fset.is_map:
        body["map"] = " . ".join(fset.value_types)
    elems = []
    for key, (value, comment) in fset.elements.items():
        item = _json_value(fset.key_types, key)
        item = {"elem": {"val": item, "comment": comment}} if comment else item
        elems.append([item, _json_value(fset.value_types, value)] if fset.is_map else item)
    if elems:
        body["elem"] = elems
    return {"map" if fset.is_map else "set": body}


def listing(table) -> dict:
    """The document `nft -j list table ip <name>` prints (nft 1.0.6): sets, chains, rules."""
    out: list = [{"metainfo": dict(_METAINFO)},
                 {"table": {"family": FAMILY, "name": table.name, "handle": table.handle}}]
    out += [_json_set(table, s) for s in sorted(table.sets.values(), key=lambda s: s.handle)]
    chains = sorted(table.chains.values(), key=lambda c: c.handle)
    out += [{"chain": {"family": FAMILY, "table": table.name, "name": c.name, "handle": c.handle,
                       **(c.base or {})}} for c in chains]
    for chain in chains:
        for rule in chain.rules:
            m, _, template = shape_of(rule.text)
            out.append({"rule": {"family": FAMILY, "table": table.name, "chain": chain.name,
                                 "handle": rule.handle, "expr": fill(template, m)}})
    return {"nftables": out}
