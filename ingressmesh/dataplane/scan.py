"""Find the namespaces that hold an ingressmesh table (for `show` and `cleanup`)."""
from __future__ import annotations

import os

from ..netns import Netns
from ..nft.kernel import KernelNft

NAMESPACE_DIRS = ("/run/netns", "/run/docker/netns")


def candidate_namespaces() -> list[Netns]:
    found = [Netns("")]
    for directory in NAMESPACE_DIRS:
        if os.path.isdir(directory):
            found += [Netns(os.path.join(directory, name)) for name in sorted(os.listdir(directory))]
    return found


def has_table(netns: Netns) -> bool:
    return KernelNft(netns).has_table()


def namespaces_with_tables() -> list[Netns]:
    return [ns for ns in candidate_namespaces() if has_table(ns)]
