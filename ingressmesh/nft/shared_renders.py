"""Render once, write everywhere: the fast path's container tables share their entries.

Every container on the same networks holds the very same plan entries (plan_containers.py
hands out one tuple per network set), so one endpoint change renders one entry, not one per
container, and a new container's full table (its script is the costly part: 10,000 elements
sorted and joined) is built once per sync and reused by every namespace that needs it.
Entries are known by identity and kept alive by what is cached, so an id is never reused
while it is a key.  The fast path clears it at every sync: nothing grows across plans.
"""
from __future__ import annotations

from .render import render_entry


class SharedRenders:
    def __init__(self):
        self._entries: dict = {}  # (role, id(entry)) -> Rendered (which holds the entry)
        self._tables: dict = {}  # (role, skeleton, id(source)) -> (source, built table)
        self._changes: dict = {}  # (id(old), id(new)) -> (old, new, the entries that changed)

    def clear(self) -> None:
        self._entries.clear()
        self._tables.clear()
        self._changes.clear()

    def render(self, role: str, entry):
        key = (role, id(entry))
        found = self._entries.get(key)
        if found is None or found.entry is not entry:
            found = self._entries[key] = render_entry(role, entry)
        return found

    def full(self, plan, skeleton_text: str, source: tuple, build):
        """`build(plan, skeleton, source, render)` once per (role, skeleton, entries tuple)."""
        key = (plan.role, skeleton_text, id(source))
        found = self._tables.get(key)
        if found is None or found[0] is not source:
            found = self._tables[key] = (source, build(plan, skeleton_text, source, self.render))
        return found[1]

    def changed(self, old: tuple, new: tuple, compare):
        """`compare(old, new)` once per pair of entry tuples (every container on the same
        networks moves from the same old tuple to the same new one)."""
        key = (id(old), id(new))
        found = self._changes.get(key)
        if found is None or found[0] is not old or found[1] is not new:
            found = self._changes[key] = (old, new, compare(old, new))
        return found[2]
