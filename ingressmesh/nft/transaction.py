"""Turn TableStates into `nft -f -` scripts: a full atomic rebuild, or an element diff.

Every script is one transaction: the kernel applies all of it or none of it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import groupby
from typing import Optional

from .render import pick_chain_rule
from .state import FAMILY, TABLE, Element, TableState

CHUNK = 2000  # elements per add/delete statement; keeps single lines a sane length


@dataclass(frozen=True)
class Transaction:
    script: str
    result: TableState  # what the table holds once the script has applied
    full: bool
    added: int
    removed: int


def _chain_block(name: str) -> str:
    return f"  chain {name} {{ {pick_chain_rule(name)}; }}\n"


def _element_lines(verb: str, elements: list[Element], with_values: bool) -> list[str]:
    lines = []
    for name, group in groupby(sorted(elements), key=lambda e: e.set):
        items = [e.nft() if with_values else e.nft_key() for e in group]
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
    parts += _element_lines("add", list(state.elements), with_values=True)
    return Transaction("".join(parts), state, True, len(state.elements), 0)


def diff(old: Optional[TableState], new: TableState) -> Optional[Transaction]:
    """The smallest transaction taking `old` to `new`; None when there is nothing to do."""
    if old is None or old.skeleton != new.skeleton or old.role != new.role:
        return full(new)
    removed = sorted(old.elements - new.elements)
    added = sorted(new.elements - old.elements)
    new_chains = sorted(new.chains - old.chains)
    if not (removed or added or new_chains):
        return None
    # A table block adds the chain and its rule in one statement, the form full() uses too.
    parts = [f"table {FAMILY} {TABLE} {{\n{_chain_block(name)}}}\n" for name in new_chains]
    parts += _element_lines("delete", removed, with_values=False)
    parts += _element_lines("add", added, with_values=True)
    # Pick chains stay until the next full sync: deleting a chain a map element referenced a
    # moment ago is unsafe on kernels before 6.2 (DESIGN §4), and an empty one costs nothing.
    result = replace(new, chains=old.chains | new.chains)
    return Transaction("".join(parts), result, False, len(added), len(removed))


def cleanup_script() -> str:
    """Removes the ingressmesh table and nothing else; fine when the table does not exist."""
    return f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
