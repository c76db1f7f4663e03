"""The nftables backend: keeps one namespace's `ip ingressmesh` table equal to its plan.

The first apply in a process is an atomic full rebuild; later applies send only element diffs
computed against what this backend last applied (held in memory, never listed back).  A
failed transaction changes nothing in the kernel and nothing in memory.
"""
from __future__ import annotations

import json
from typing import Optional, Protocol

from ..plan import NamespacePlan
from ..view import Row, rows_from_state
from . import transaction
from .reader import state_from_json
from .render import desired_state
from .state import FAMILY, TABLE, TableState


class NftError(RuntimeError):
    """nft refused a transaction; the message carries nft's own diagnostics."""


class NftRunner(Protocol):
    """Where transactions go: the real `nft` in a namespace, or the in-memory Fake."""

    def run_script(self, script: str) -> None: ...

    def list_table(self) -> Optional[dict]: ...

    def forget_connections(self, addresses: frozenset) -> None: ...


class NftBackend:
    name = "nft"

    def __init__(self, runner: NftRunner):
        self.runner = runner
        self.applied: Optional[TableState] = None

    def apply(self, plan: NamespacePlan) -> Optional[transaction.Transaction]:
        """Make the table match `plan`; returns what was sent, or None if nothing changed."""
        wanted = desired_state(plan)
        tx = transaction.diff(self.applied, wanted)
        if tx is None:
            return None
        self.runner.run_script(tx.script)  # raises NftError and leaves self.applied alone
        gone = _backend_addresses(self.applied) - _backend_addresses(tx.result)
        self.applied = tx.result
        if gone:
            # Connections to a task that left the plan (drain over, or task gone) would
            # otherwise stay pinned to it by conntrack: that is Docker's stale-backend bug.
            self.runner.forget_connections(frozenset(gone))
        return tx

    def read(self) -> list[Row]:
        document = self.runner.list_table()
        return rows_from_state(state_from_json(document)) if document else []

    def cleanup(self) -> None:
        self.runner.run_script(transaction.cleanup_script())
        self.applied = None


def _backend_addresses(state: Optional[TableState]) -> set[str]:
    if state is None:
        return set()
    found = set()
    for e in state.elements:
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
        proc = self.netns.run(["nft", "-f", "-"], stdin=script, check=False)
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
