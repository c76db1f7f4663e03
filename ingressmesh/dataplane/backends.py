"""Choosing a data plane: `--backend auto|nftables|ipvs`.

`auto` takes IPVS where the kernel has it (as Docker would) and nftables everywhere else;
`explain()` says which one auto picks and why, for `doctor`.
"""
from __future__ import annotations

import os
import shutil
from typing import Callable

from ..netns import Netns

CHOICES = ("auto", "nftables", "ipvs")


def ipvs_available() -> tuple[bool, str]:
    """Whether the ipvs backend can run: the kernel has IPVS, and ipvsadm (timeouts) is here."""
    if os.path.exists("/proc/net/ip_vs"):
        why = "/proc/net/ip_vs present"
    else:
        try:
            from pyroute2 import IPVS
            IPVS().close()
            why = "the IPVS netlink family answers"
        except Exception as err:  # pyroute2 raises several types when the family is missing
            return False, f"no IPVS in this kernel ({type(err).__name__})"
    if not shutil.which("ipvsadm", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
        return False, f"{why}, but ipvsadm is not installed (it sets the IPVS timeouts)"
    return True, why


def resolve(choice: str) -> str:
    if choice not in CHOICES:
        raise ValueError(f"backend {choice!r} is not one of {', '.join(CHOICES)}")
    if choice != "auto":
        return choice
    return "ipvs" if ipvs_available()[0] else "nftables"


def explain() -> str:
    ok, why = ipvs_available()
    return f"auto picks {'ipvs' if ok else 'nftables'}: {why}"


def factory(choice: str, ipvs_timeouts=None) -> Callable[[Netns], object]:
    """Netns -> backend for the resolved choice (`ipvs_timeouts`: an IpvsTimeouts, or defaults)."""
    if resolve(choice) == "ipvs":
        from ..ipvs.backend import IpvsBackend, IpvsTimeouts
        timeouts = ipvs_timeouts or IpvsTimeouts()
        return lambda netns: IpvsBackend(netns, timeouts)
    from .apply import kernel_nft_backend
    return kernel_nft_backend
