"""Whether a container's namespace holds packet-filter rules of its own (issue 19, point 9).

The fast path DNATs a VIP in the container's nat output hook (priority -100), before the
filter output hook (priority 0) where a container's own rules run: a rule that drops the VIP
would then see the task's address instead and no longer match.  Such a container stays on the
LB path (its packets leave with the VIP as destination, so its own rules see the VIP) unless
its operator opts it in.  What counts as "its own":
- any nftables table in the `ip` or `inet` family with at least one rule, other than ours and
  iptables-nft's `ip nat` (Docker's embedded DNS puts its 127.0.0.11 redirects there in every
  container on a user-defined network; nat rules do not filter);
- any legacy iptables table other than `nat` that exists in the namespace (its rules cannot
  be read without a process; a table exists only once something used it there).
"""
from __future__ import annotations

from ..netns import Netns
from .state import FAMILY, TABLE

IGNORED = ((FAMILY, TABLE), ("ip", "nat"), ("ip", "ingressmesh_src"))  # ingressmesh_src: reply_routes.py
LEGACY_NAMES = "/proc/thread-self/net/ip_tables_names"  # this thread's namespace, not the process's


def own_tables(ruleset: dict) -> list[str]:
    """`family name` of every table in an nft JSON ruleset that holds rules of its own."""
    found = []
    for item in ruleset.get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("family") not in ("ip", "inet"):
            continue
        name = f"{rule['family']} {rule['table']}"
        if (rule["family"], rule["table"]) not in IGNORED and name not in found:
            found.append(name)
    return found


def legacy_tables(netns: Netns) -> list[str]:
    """Legacy iptables tables (x_tables) present in the namespace, `nat` left out."""
    with netns.entered():
        try:
            with open(LEGACY_NAMES, encoding="ascii") as handle:
                names = handle.read().split()
        except FileNotFoundError:  # ip_tables not loaded: no legacy table anywhere
            return []
    return [f"iptables-legacy {n}" for n in names if n != "nat"]


def own_rules(runner, netns: Netns) -> list[str]:
    """What makes the namespace's rules its own (empty: none); `runner` is a LibNft.  Ours is
    never listed (its thousands of elements would be fetched from the kernel for nothing)."""
    found = [f"{family} {name}" for family, name in runner.tables()
             if family in ("ip", "inet") and (family, name) not in IGNORED and runner.table_has_rules(family, name)]
    return found + legacy_tables(netns)
