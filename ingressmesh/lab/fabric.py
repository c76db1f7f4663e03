"""The lab's L2 fabric: one netns per node and a client netns, all on a bridge that lives in
its own netns (the root netns is never touched: no veth, no sysctl, no route there)."""
from __future__ import annotations

import os
import subprocess

from .config import LabConfig
from .state import LabState

RUN_NETNS = "/run/netns"


class FabricError(RuntimeError):
    """An `ip` command of the fabric failed."""


def _ip(args: list[str], batch: str | None = None) -> None:
    argv = ["ip", *args] + (["-batch", "-"] if batch is not None else [])
    proc = subprocess.run(argv, input=batch, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise FabricError(f"{' '.join(argv)}: {proc.stderr.strip()}")


def netns_path(name: str) -> str:
    return os.path.join(RUN_NETNS, name)


def create(config: LabConfig, state: LabState) -> None:
    """Bridge netns, node netns with eth0 = SUBNET.N/24 and the client netns; no default route
    anywhere, so nothing in the lab can reach beyond it."""
    ends = [(config.node_netns_name(n), f"veth{n}", config.node_address(n))
            for n in config.node_numbers]
    ends.append((config.client_netns_name, "vethc", config.client_address))
    for name in [config.bridge_netns_name] + [ns for ns, _veth, _addr in ends]:
        if os.path.exists(netns_path(name)):
            raise FabricError(f"{netns_path(name)} exists: the lab is up or left over (lab down)")
        _ip(["netns", "add", name])
        state.add("netns", name)
    bridge = config.bridge_netns_name
    _ip([], batch="".join(f"link add eth0 netns {ns} type veth peer name {veth} netns {bridge}\n"
                          for ns, veth, _addr in ends))
    _ip(["-n", bridge], batch="link set lo up\nlink add br0 type bridge\nlink set br0 up\n"
        + "".join(f"link set {veth} master br0 up\n" for _ns, veth, _addr in ends))
    # Frames crossing br0 must not be sent through iptables (br_netfilter); best effort.
    subprocess.run(["nsenter", f"--net={netns_path(bridge)}", "sysctl", "-qw",
                    "net.bridge.bridge-nf-call-iptables=0"], capture_output=True, timeout=10)
    for ns, _veth, addr in ends:
        _ip(["-n", ns], batch=f"link set lo up\naddr add {addr}/24 dev eth0\nlink set eth0 up\n")


def existing(config: LabConfig) -> list[str]:
    """Names under /run/netns that this lab's prefix owns."""
    try:
        names = os.listdir(RUN_NETNS)
    except OSError:
        return []
    pattern = config.netns_pattern()
    return sorted(name for name in names if pattern.fullmatch(name))


def delete(names: list[str]) -> list[str]:
    """`ip netns del` each (veths and the bridge go with them); returns the ones that failed."""
    failed = []
    for name in names:
        if not os.path.exists(netns_path(name)):
            continue
        proc = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0 and os.path.exists(netns_path(name)):
            failed.append(f"{name}: {proc.stderr.strip()}")
    return failed
