"""The nftables backend: keeps one namespace's `ip ingressmesh` table equal to its plan.

The first apply is an atomic full rebuild; later applies send only the element changes of
the front-ends whose plan entry changed, found by identity (free for unchanged services)
and computed against what this backend last applied (held in memory, never listed back on
the sync path).  A refused transaction leaves the kernel and this memory as they were, and
the next apply rebuilds the table in full, so drift (a flushed table, a lost element) heals.
Connections to a task address that no element of the table uses any more are deleted from
conntrack, so nothing stays pinned to a drained or dead task.
"""
from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Optional, Protocol

from ..dataplane.forget import ConnectionForgetter
from ..netns import NetnsError
from ..plan import NamespacePlan
from ..dataplane.view import Row
from . import transaction
from .errors import NftError
from .reader import state_from_json
from .render import Rendered, element_addresses, entry_key, plan_entries, render_entry, skeleton
from .rows import rows_from_state
from .state import TableState

__all__ = ["NftBackend", "NftError", "NftRunner"]
log = logging.getLogger(__name__)


class NftRunner(Protocol):
    """Where transactions go: the real `nft` in a namespace (kernel.py), or FakeNft."""

    def run_script(self, script: str) -> None: ...

    def list_table(self) -> Optional[dict]: ...

    def forget_connections(self, addresses: frozenset) -> None: ...


@dataclass(frozen=True)
class Applied:
    """What this backend last put in the table: per front-end, its entry and elements."""
    role: str
    skeleton: str
    chains: frozenset
    entries: Mapping[tuple, Rendered]
    source: tuple = ()  # the plan entries, in plan order, that this state was made from

    @property
    def elements(self) -> frozenset:
        return frozenset(e for r in self.entries.values() for e in r.elements)


@dataclass
class _Diff:
    entries: dict
    added: list = dataclasses.field(default_factory=list)
    removed: list = dataclasses.field(default_factory=list)
    refs: Counter = dataclasses.field(default_factory=Counter)  # address -> change in use count
    chains: set = dataclasses.field(default_factory=set)  # pick chains the new renders jump to

    def replace(self, key: tuple, before: Optional[Rendered], now: Optional[Rendered]) -> None:
        old_elements = before.elements if before else frozenset()
        new_elements = now.elements if now else frozenset()
        self.added += new_elements - old_elements
        self.removed += old_elements - new_elements
        self.refs.update(now.addresses if now else ())
        self.refs.subtract(before.addresses if before else ())
        if now is None:
            self.entries.pop(key, None)
        else:
            self.entries[key] = now
            if now.chain:
                self.chains.add(now.chain)


class NftBackend:
    name = "nft"

    def __init__(self, runner: NftRunner, renders: Optional[object] = None):
        self.runner = runner
        self.renders = renders  # a SharedRenders when many namespaces take the same entries
        self.applied: Optional[Applied] = None
        self.needs_full = True  # first apply, or after a refused transaction
        self._refs: Counter = Counter()  # task address -> elements using it
        self.forgetter = ConnectionForgetter(runner.forget_connections)

    def apply(self, plan: NamespacePlan) -> Optional[transaction.Transaction]:
        """Make the table match `plan`; returns what was sent, or None if nothing changed."""
        old = self.applied
        skeleton_text = skeleton(plan)
        if self.needs_full or old is None or old.skeleton != skeleton_text or old.role != plan.role:
            return self._full(plan, skeleton_text)
        new_entries = plan_entries(plan)
        diff = _Diff(dict(old.entries))
        changed = (self.renders.changed(old.source, new_entries, _changed_in_place) if self.renders is not None
                   else _changed_in_place(old.source, new_entries))
        keyed = changed is None  # entries appeared, vanished or moved: compare by key
        for entry in new_entries if keyed else changed:
            key = entry_key(entry)
            before = old.entries.get(key)
            if before is not None and before.entry is entry:
                continue
            if before is not None and before.entry == entry:
                # Same content from a new plan: point at the new entry, so the old plan can be
                # freed and the next apply finds it by identity.
                diff.entries[key] = dataclasses.replace(before, entry=entry)
                continue
            diff.replace(key, before, self._render(plan.role, entry))
        if keyed:
            wanted = {entry_key(e) for e in new_entries}
            if len(wanted) != len(new_entries):
                raise ValueError(f"{plan.key}: two services share a front-end (duplicate VIP or port)")
            for key in old.entries.keys() - wanted:
                diff.replace(key, old.entries[key], None)
        # Unchanged entries' chains are in old.chains already (chains are only added between full syncs).
        new_chains = diff.chains - old.chains if diff.added else set()
        if not (diff.added or diff.removed or new_chains):
            self.applied = dataclasses.replace(old, source=new_entries)
            self._forget(set())
            return None
        tx = transaction.changes(diff.added, diff.removed, new_chains)
        self._run(tx.script)
        self.applied = Applied(plan.role, skeleton_text, old.chains | new_chains, diff.entries, new_entries)
        for address, delta in diff.refs.items():  # counts of 0 are dropped, not kept forever
            count = self._refs.get(address, 0) + delta
            if count > 0:
                self._refs[address] = count
            else:
                self._refs.pop(address, None)
        self._forget({a for a, delta in diff.refs.items() if delta < 0 and a not in self._refs})
        return tx

    def _full(self, plan: NamespacePlan, skeleton_text: str) -> transaction.Transaction:
        """Rebuild the whole table in one transaction (first apply, drift, or a new skeleton)."""
        source = plan_entries(plan)
        if self.renders is not None:
            entries, chains, tx, refs = self.renders.full(plan, skeleton_text, source, _full_table)
        else:
            entries, chains, tx, refs = _full_table(plan, skeleton_text, source, render_entry)
        before = self._addresses_in_table()
        self._run(tx.script)
        self.applied = Applied(plan.role, skeleton_text, chains, entries, source)
        self.needs_full = False
        self._refs = Counter(refs)
        self._forget(before - set(self._refs))
        return tx

    def _render(self, role: str, entry) -> Rendered:
        return self.renders.render(role, entry) if self.renders is not None else render_entry(role, entry)

    def _addresses_in_table(self) -> set:
        """Task addresses the table uses now: from memory, or read back once after a start
        (or a failure), so a restarted agent still forgets connections to tasks gone since."""
        if self.applied is not None and not self.needs_full:
            return set(self._refs)
        try:
            document = self.runner.list_table()
        except (NftError, NetnsError, OSError) as err:
            log.warning("cannot read the current table to find removed tasks: %s", err)
            return set(self._refs)
        return element_addresses(state_from_json(document).elements) if document else set()

    def _run(self, script: str) -> None:
        try:
            self.runner.run_script(script)
        except NftError:
            self.needs_full = True  # the table may not be what we think: rebuild next time
            raise

    def _forget(self, gone: set) -> None:
        """Forget connections to addresses no element uses (any more, or again)."""
        self.forgetter.forget(gone, lambda address: self._refs[address] > 0)

    def read(self) -> list[Row]:
        document = self.runner.list_table()
        return rows_from_state(state_from_json(document)) if document else []

    def cleanup(self) -> None:
        self.runner.run_script(transaction.cleanup_script())
        self.applied = None
        self.needs_full = True
        self._refs = Counter()


def _full_table(plan: NamespacePlan, skeleton_text: str, source: tuple, render) -> tuple:
    """(entries by key, pick chains, the full transaction, task address counts) for a plan."""
    entries = {entry_key(e): render(plan.role, e) for e in source}
    if len(entries) != len(source):
        raise ValueError(f"{plan.key}: two services share a front-end (duplicate VIP or port)")
    chains = frozenset(r.chain for r in entries.values() if r.chain)
    elements = frozenset(e for r in entries.values() for e in r.elements)
    tx = transaction.full(TableState(plan.role, skeleton_text, chains, elements))
    return entries, chains, tx, Counter(a for r in entries.values() for a in r.addresses)


def _changed_in_place(old: tuple, new: tuple) -> Optional[list]:
    """The entries that differ from the last plan, when every front-end kept its position
    (the common case: endpoints changed); None when a key-by-key comparison is needed.
    An identity check per entry costs almost nothing, so 10k unchanged services are free."""
    if len(old) != len(new):
        return None
    changed = [(a, b) for a, b in zip(old, new) if a is not b]
    if any(entry_key(a) != entry_key(b) for a, b in changed):
        return None
    return [b for _, b in changed]
