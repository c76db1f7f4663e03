"""The nftables backend: keeps one namespace's `ip ingressmesh` table equal to its plan.

The first apply in a process is an atomic full rebuild; later applies send only element diffs
computed against what this backend last applied (held in memory, never listed back).  A
failed transaction changes nothing in the kernel and nothing in memory.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional, Protocol

from ..plan import NamespacePlan
from ..view import Row, rows_from_state
from . import transaction
from .reader import state_from_json
from .render import Rendered, entry_key, plan_entries, render_entry, skeleton
from .state import FAMILY, TABLE, TableState


TIMEOUT = 120.0  # seconds for one transaction; a 10k-service full sync takes about one


class NftError(RuntimeError):
    """nft refused a transaction; the message carries nft's own diagnostics."""


class NftRunner(Protocol):
    """Where transactions go: the real `nft` in a namespace, or the in-memory Fake."""

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


class NftBackend:
    name = "nft"

    def __init__(self, runner: NftRunner):
        self.runner = runner
        self.applied: Optional[Applied] = None

    def apply(self, plan: NamespacePlan) -> Optional[transaction.Transaction]:
        """Make the table match `plan`; returns what was sent, or None if nothing changed."""
        old = self.applied
        skeleton_text = skeleton(plan)
        if old is None or old.skeleton != skeleton_text or old.role != plan.role:
            return self._full(plan, skeleton_text)
        entries = dict(old.entries)
        added, removed, gone = [], [], set()
        new_entries = plan_entries(plan)
        changed = _changed_in_place(old.source, new_entries)
        keyed = changed is None  # entries appeared, vanished or moved: compare by key
        for entry in new_entries if keyed else changed:
            key = entry_key(entry)
            before = old.entries.get(key)
            if before is not None and (before.entry is entry or before.entry == entry):
                continue
            now = render_entry(plan.role, entry)
            entries[key] = now
            old_elements = before.elements if before else frozenset()
            added += now.elements - old_elements
            removed += old_elements - now.elements
            gone |= _addresses(old_elements) - _addresses(now.elements)
        if keyed:
            for key in old.entries.keys() - {entry_key(e) for e in new_entries}:
                removed += old.entries[key].elements
                gone |= _addresses(entries.pop(key).elements)
        new_chains = {r.chain for r in entries.values() if r.chain} - old.chains if added else set()
        if not (added or removed or new_chains):
            self.applied = dataclasses.replace(old, source=new_entries)
            return None
        tx = transaction.changes(added, removed, new_chains)
        self.runner.run_script(tx.script)  # raises NftError and leaves self.applied alone
        self.applied = Applied(plan.role, skeleton_text, old.chains | new_chains, entries, new_entries)
        self._forget(gone)
        return tx

    def _full(self, plan: NamespacePlan, skeleton_text: str) -> transaction.Transaction:
        """Rebuild the whole table in one transaction (first apply, or a new skeleton)."""
        entries = {entry_key(e): render_entry(plan.role, e) for e in plan_entries(plan)}
        chains = frozenset(r.chain for r in entries.values() if r.chain)
        elements = frozenset(e for r in entries.values() for e in r.elements)
        tx = transaction.full(TableState(plan.role, skeleton_text, chains, elements))
        self.runner.run_script(tx.script)
        before = self.applied.elements if self.applied else frozenset()
        self.applied = Applied(plan.role, skeleton_text, chains, entries, plan_entries(plan))
        self._forget(_addresses(before) - _addresses(elements))
        return tx

    def _forget(self, gone: set) -> None:
        if gone:
            # Connections to a task that left the plan (drain over, or task gone) would
            # otherwise stay pinned to it by conntrack: that is Docker's stale-backend bug.
            self.runner.forget_connections(frozenset(gone))

    def read(self) -> list[Row]:
        document = self.runner.list_table()
        return rows_from_state(state_from_json(document)) if document else []

    def cleanup(self) -> None:
        self.runner.run_script(transaction.cleanup_script())
        self.applied = None


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


def _addresses(elements) -> set[str]:
    """Task addresses that elements send traffic to (active or draining)."""
    found = set()
    for e in elements:
        if e.set in ("vip_backends", "port_backends"):
            found.add(str(e.value[0]))
        elif e.set == "vip_draining":
            found.add(str(e.key[1]))
        elif e.set == "port_draining":
            found.add(str(e.key[2]))
    return found


class KernelNft:
    """Runs `nft -f -` (and conntrack) inside a network namespace."""

    def __init__(self, netns):
        self.netns = netns

    def run_script(self, script: str) -> None:
        try:
            proc = self.netns.run(["nft", "-f", "-"], stdin=script, check=False, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            # A transaction commits at its end, so a killed nft has changed nothing.
            raise NftError(f"nft transaction in {self.netns.name} timed out after {TIMEOUT:g} s") from None
        if proc.returncode != 0:
            raise NftError(f"nft transaction refused in {self.netns.name}: {proc.stderr.strip()}")

    def list_table(self) -> Optional[dict]:
        proc = self.netns.run(["nft", "-j", "list", "table", FAMILY, TABLE], check=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)

    def forget_connections(self, addresses: frozenset) -> None:
        for address in sorted(addresses):
            # Exit status 1 means "no entry matched", which is fine.
            self.netns.run(["conntrack", "-D", "--reply-src", address], check=False)
