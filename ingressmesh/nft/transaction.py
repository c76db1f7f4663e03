"""Turn table contents into `nft -f -` scripts: a full atomic rebuild, or element changes.

Every script is one transaction: the kernel applies all of it or none of it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .render import pick_chain_rule
from .state import FAMILY, TABLE, Element, TableState

CHUNK = 2000  # elements per add/delete statement; keeps single lines a sane length


@dataclass(frozen=True)
class Transaction:
    script: str
    full: bool
    added: int
    removed: int


def _chain_block(name: str) -> str:
    return f"  chain {name} {{ {pick_chain_rule(name)}; }}\n"


def _element_lines(verb: str, elements, with_values: bool) -> list[str]:
    by_set: dict[str, list[str]] = {}
    for e in elements:
        by_set.setdefault(e.set, []).append(e.nft() if with_values else e.nft_key())
    lines = []
    for name in sorted(by_set):
        items = sorted(by_set[name])  # deterministic scripts; strings sort fast
        for start in range(0, len(items), CHUNK):
            body = ", ".join(items[start:start + CHUNK])
            lines.append(f"{verb} element {FAMILY} {TABLE} {name} {{ {body} }}\n")
    return lines


def full(state: TableState) -> Transaction:
    """Replace the whole table atomically (first sync, or when the skeleton changed)."""
    parts = [f"table {FAMILY} {TABLE}\n", f"delete table {FAMILY} {TABLE}\n",
             f"table {FAMILY} {TABLE} {{\n", state.skeleton]
    parts += [_chain_block(name) for name in sorted(state.chains)]
    parts.append("}\n")
    parts += _element_lines("add", state.elements, with_values=True)
    return Transaction("".join(parts), True, len(state.elements), 0)


def changes(added: list[Element], removed: list[Element], new_chains) -> Transaction:
    """Element deletions, then additions (a changed value is a delete plus an add), plus any
    pick chains not yet in the table.  Pick chains are never deleted here: dropping a chain a
    map element referenced a moment ago is unsafe on kernels before 6.2 (DESIGN §4), and an
    unused one costs nothing until the next full sync."""
    parts = [f"table {FAMILY} {TABLE} {{\n{_chain_block(name)}}}\n" for name in sorted(new_chains)]
    parts += _element_lines("delete", removed, with_values=False)
    parts += _element_lines("add", added, with_values=True)
    return Transaction("".join(parts), False, len(added), len(removed))


def cleanup_script() -> str:
    """Removes the ingressmesh table and nothing else; fine when the table does not exist."""
    return f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
