"""The real nftables: `nft -f -`, `nft -j list` and `conntrack -D` inside one namespace."""
from __future__ import annotations

import json
import subprocess
from typing import Optional

from ..netns import Netns, NetnsError
from .errors import NftError
from .state import FAMILY, TABLE

TIMEOUT = 120.0  # seconds for one transaction; a 10k-service full sync takes about one


class KernelNft:
    """Implements the NftRunner protocol of backend.py against the kernel."""

    def __init__(self, netns: Netns):
        self.netns = netns

    def run_script(self, script: str) -> None:
        try:
            proc = self.netns.run(["nft", "-f", "-"], stdin=script, check=False, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise NftError(f"nft transaction in {self.netns.name} timed out after {TIMEOUT:g} s; "
                           "whether it committed is unknown") from None
        if proc.returncode != 0:
            raise NftError(f"nft transaction refused in {self.netns.name}: {proc.stderr.strip()}")

    def list_table(self) -> Optional[dict]:
        """Our table as nft's JSON, or None when it does not exist (slow for big tables)."""
        try:
            proc = self.netns.run(["nft", "-j", "list", "table", FAMILY, TABLE], check=False, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise NftError(f"listing the table in {self.netns.name} timed out") from None
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout)

    def has_table(self) -> bool:
        """Cheap existence check: terse listing leaves set elements out."""
        proc = self.netns.run(["nft", "-t", "list", "table", FAMILY, TABLE], check=False, timeout=TIMEOUT)
        return proc.returncode == 0

    def forget_connections(self, addresses: frozenset) -> None:
        """Delete conntrack entries whose reply comes from these task addresses.

        One shell in the namespace runs `conntrack -D` per address: a node going down can
        remove hundreds of tasks at once, and a namespace entry per address would cost more
        than the deletions.  `conntrack` exits 1 when nothing matched, which is fine."""
        loop = 'for a; do conntrack -D --reply-src "$a" >/dev/null 2>&1 || [ $? -eq 1 ] || echo "$a"; done'
        try:
            proc = self.netns.run(["sh", "-c", loop, "forget", *sorted(addresses)], check=False,
                                  timeout=30 + len(addresses) * 0.05)
        except subprocess.TimeoutExpired:
            raise NetnsError(f"conntrack -D in {self.netns.name} timed out") from None
        failed = proc.stdout.split()
        if proc.returncode != 0 or failed:
            raise NetnsError(f"conntrack -D failed in {self.netns.name} for {failed or sorted(addresses)}")
