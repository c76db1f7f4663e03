"""Each VIP as a /32 on the network's load-balancer endpoint, as Docker does with IPVS.

Containers reach a VIP on-link: they ARP for it on the overlay.  Unless the lb endpoint holds
the address nobody answers and a connection fails with "No route to host" before any of our
rules see a packet.  The endpoint is the interface holding the lb address (the SNAT source);
/32 addresses inside the network's subnet on it are ours to add and remove.
"""
from __future__ import annotations

import ipaddress

from pyroute2 import IPRoute

from ..netns import Netns


def _interface_of(ipr: IPRoute, address: str):
    for entry in ipr.get_addr(family=2):
        if entry.get_attr("IFA_ADDRESS") == address:
            return entry["index"], entry["prefixlen"]
    return None, None


def sync_vip_aliases(netns: Netns, lb_address: str, vips: set[str]) -> tuple[int, int]:
    """Make the /32 VIP addresses on the lb endpoint exactly `vips`; (added, removed)."""
    added = removed = 0
    with netns.entered():
        with IPRoute() as ipr:
            index, prefix = _interface_of(ipr, lb_address)
            if index is None:
                raise ValueError(f"{netns.path}: no interface holds the lb address {lb_address}")
            subnet = ipaddress.IPv4Network(f"{lb_address}/{prefix}", strict=False)
            present = {e.get_attr("IFA_ADDRESS") for e in ipr.get_addr(family=2, index=index)
                       if e["prefixlen"] == 32}
            ours = {a for a in present if ipaddress.IPv4Address(a) in subnet}
            for vip in sorted(vips - present):
                ipr.addr("add", index=index, address=vip, prefixlen=32)
                added += 1
            for vip in sorted(ours - vips):
                ipr.addr("del", index=index, address=vip, prefixlen=32)
                removed += 1
    return added, removed
