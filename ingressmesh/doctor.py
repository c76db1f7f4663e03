"""`ingressmesh doctor`: what this kernel can do for a routing mesh, and what that means.

Every check really exercises the feature (a dry-run nft transaction, a VXLAN link made in a
throwaway namespace, a genetlink lookup for IPVS) rather than guessing from versions.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass

import click
from rich.console import Console
from rich.table import Table

from .nft.render import pick_chain_rule, skeleton
from .plan import NamespacePlan


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    meaning: str


def _run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)


def check_nft() -> Check:
    meaning = "the nftables backend (default) programs VIPs and published ports"
    if not shutil.which("nft"):
        return Check("nftables", False, "nft not installed", "install the nftables package; " + meaning)
    version = _run(["nft", "--version"]).stdout.strip()
    # A dry run (-c) of every rule shape the backend emits: the kernel validates, nothing changes.
    script = "table ip ingressmesh_doctor {\n"
    for role in ("host", "ingress", "lb"):
        body = skeleton(NamespacePlan(role=role, forward_to="192.0.2.1", snat_address="192.0.2.2"))
        script += body.replace("chain ", f"chain {role}_").replace("goto reject_new", f"goto {role}_reject_new")
    script += f"  chain pick_vip_3 {{ {pick_chain_rule('pick_vip_3')}; }}\n"
    script += f"  chain pick_port_3 {{ {pick_chain_rule('pick_port_3')}; }}\n}}\n"
    proc = _run(["nft", "-c", "-f", "-"], _dedupe_sets(script))
    if proc.returncode != 0:
        return Check("nftables", False, f"{version}: rules refused: {proc.stderr.strip()[:200]}",
                     "this kernel lacks nat/fib/numgen support: " + meaning + " cannot work")
    return Check("nftables", True, f"{version}; every rule shape accepted (dry run)", meaning)


def _dedupe_sets(script: str) -> str:
    """The three role skeletons declare the same sets: keep the first declaration of each."""
    seen, lines = set(), []
    for line in script.splitlines():
        stripped = line.strip()
        if stripped.startswith(("set ", "map ")) and stripped in seen:
            continue
        seen.add(stripped)
        lines.append(line)
    return "\n".join(lines) + "\n"


def check_ipvs() -> Check:
    meaning = "the ipvs backend (--backend ipvs) can run; otherwise use nftables"
    if os.path.exists("/proc/net/ip_vs"):
        return Check("IPVS", True, "/proc/net/ip_vs present", meaning)
    try:
        from pyroute2 import IPVS
        IPVS().close()
        return Check("IPVS", True, "IPVS generic netlink family answers", meaning)
    except Exception as err:  # pyroute2 raises several types when the family is missing
        return Check("IPVS", False, f"not available ({type(err).__name__})",
                     "Docker's own routing mesh does nothing on this kernel; ingressmesh's nft backend works")


def check_conntrack() -> Check:
    present = os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max")
    tool = shutil.which("conntrack") is not None
    detail = ("nf_conntrack loaded" if present else "nf_conntrack not loaded") + \
        ("; conntrack tool installed" if tool else "; conntrack tool missing")
    return Check("conntrack", present and tool, detail,
                 "NAT needs conntrack; the tool lets ingressmesh drop connections to removed tasks")


def check_forwarding() -> Check:
    with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as handle:
        value = handle.read().strip()
    return Check("ip_forward (this namespace)", value == "1", f"net.ipv4.ip_forward={value}",
                 "ingressmesh sets it to 1 in every namespace it programs")


def check_vxlan() -> Check:
    name = f"imdoc{uuid.uuid4().hex[:8]}"
    made = _run(["ip", "netns", "add", name])
    if made.returncode != 0:
        return Check("VXLAN", False, f"cannot create a namespace: {made.stderr.strip()}",
                     "swarm overlay networks need VXLAN")
    try:
        proc = _run(["ip", "-n", name, "link", "add", "vx0", "type", "vxlan", "id", "42",
                     "dstport", "4789", "local", "127.0.0.1"])
        ok = proc.returncode == 0
        detail = "a VXLAN link was created in a scratch namespace" if ok else proc.stderr.strip()
    finally:
        _run(["ip", "netns", "del", name])
    return Check("VXLAN", ok, detail, "swarm overlay networks (and the lab) need VXLAN")


CHECKS = (check_nft, check_ipvs, check_conntrack, check_forwarding, check_vxlan)


def run_checks() -> list[Check]:
    return [check() for check in CHECKS]


@click.command("doctor")
def doctor_command() -> None:
    """What this kernel can do: nft, IPVS, conntrack, ip_forward, VXLAN."""
    table = Table(title="ingressmesh doctor", title_justify="left")
    for column in ("check", "status", "detail", "what it means"):
        table.add_column(column)
    checks = run_checks()
    for c in checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]no[/]", c.detail, c.meaning)
    Console().print(table)
    if not checks[0].ok:
        raise SystemExit(1)
