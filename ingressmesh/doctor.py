"""`ingressmesh doctor`: what this kernel can do for a routing mesh, and what that means.

Every check really exercises the feature (a dry-run nft transaction, a VXLAN link made in a
throwaway namespace, a genetlink lookup for IPVS) rather than guessing from versions.
The nft dry run and the scratch namespace need root (CAP_NET_ADMIN): without it those checks
say "needs root to check" instead of blaming the kernel, and the command exits non-zero.
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

from .dataplane import backends
from .nft.render import pick_chain_rule, skeleton
from .plan import NamespacePlan


NEEDS_ROOT = "needs root to check"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    meaning: str
    needs_root: bool = False  # could not be checked without privileges (ok is then False)

    @property
    def status(self) -> str:
        return "needs root" if self.needs_root else ("ok" if self.ok else "no")


def _search_path() -> str:
    """PATH plus the sbin directories, which a non-root user's PATH often lacks (Debian)."""
    return os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_search_path())


def _run(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PATH": _search_path()})


def _is_root() -> bool:
    return os.geteuid() == 0


def _denied(stderr: str) -> bool:
    """The kernel refused for lack of privilege (e.g. root in a container without NET_ADMIN)."""
    return "Operation not permitted" in stderr or "Permission denied" in stderr


def check_nft() -> Check:
    meaning = "the nftables backend (default) programs VIPs and published ports"
    if not _which("nft"):
        return Check("nftables", False, "nft not installed", "install the nftables package; " + meaning)
    version = _run(["nft", "--version"]).stdout.strip()
    if not _is_root():
        return Check("nftables", False, f"{version}; the dry run of every rule shape {NEEDS_ROOT}",
                     meaning, needs_root=True)
    # A dry run (-c) of every rule shape the backend emits: the kernel validates, nothing changes.
    script = "table ip ingressmesh_doctor {\n"
    for role in ("host", "ingress", "lb"):
        body = skeleton(NamespacePlan(role=role, forward_to="192.0.2.1", snat_address="192.0.2.2"))
        script += body.replace("chain ", f"chain {role}_").replace("goto reject_new", f"goto {role}_reject_new")
    script += f"  chain pick_vip_3 {{ {pick_chain_rule('pick_vip_3')}; }}\n"
    script += f"  chain pick_port_3 {{ {pick_chain_rule('pick_port_3')}; }}\n}}\n"
    proc = _run(["nft", "-c", "-f", "-"], _dedupe_sets(script))
    if proc.returncode != 0 and _denied(proc.stderr):
        return Check("nftables", False, f"{version}: the dry run was not permitted (needs CAP_NET_ADMIN): "
                     f"{proc.stderr.strip()[:200]}", meaning, needs_root=True)
    if proc.returncode != 0:
        return Check("nftables", False, f"{version}: rules refused: {proc.stderr.strip()[:200]}",
                     "this kernel lacks nat/fib/numgen support: " + meaning + " cannot work")
    return Check("nftables", True, f"{version}; every rule shape accepted (dry run)", meaning)


def _dedupe_sets(script: str) -> str:
    """The three role skeletons declare the same sets: keep the first declaration of each.

    Declarations are one line each (`set NAME { ... }`, `map NAME { ... }`), as rendered; a later
    line declaring an already declared set or map name is dropped, whatever its body.
    """
    seen, lines = set(), []
    for line in script.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("set", "map"):
            key = (words[0], words[1])
            if key in seen:
                continue
            seen.add(key)
        lines.append(line)
    return "\n".join(lines) + "\n"


def check_ipvs() -> Check:
    ok, why = backends.ipvs_available()
    if ok:
        return Check("IPVS", True, why, f"the ipvs backend can run here; {backends.explain()}")
    return Check("IPVS", False, f"not available: {why}",
                 "Docker's own routing mesh does nothing on this kernel; "
                 f"ingressmesh's nftables backend works ({backends.explain()})")


def check_conntrack() -> Check:
    present = os.path.exists("/proc/sys/net/netfilter/nf_conntrack_max")
    tool = _which("conntrack") is not None
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
    meaning = "swarm overlay networks (and the lab) need VXLAN"
    if not _which("ip"):
        return Check("VXLAN", False, "ip not installed", "install iproute2; " + meaning)
    if not _is_root():
        return Check("VXLAN", False, f"creating a VXLAN link in a scratch namespace {NEEDS_ROOT}",
                     meaning, needs_root=True)
    name = f"imdoc{uuid.uuid4().hex[:8]}"
    made = _run(["ip", "netns", "add", name])
    if made.returncode != 0:
        error = made.stderr.strip()
        return Check("VXLAN", False, f"cannot create a scratch namespace: {error}", meaning,
                     needs_root=_denied(error))
    try:
        proc = _run(["ip", "-n", name, "link", "add", "vx0", "type", "vxlan", "id", "42",
                     "dstport", "4789", "local", "127.0.0.1"])
        ok = proc.returncode == 0
        detail = "a VXLAN link was created in a scratch namespace" if ok else proc.stderr.strip()
    finally:
        _run(["ip", "netns", "del", name])
    return Check("VXLAN", ok, detail, meaning)


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
    colour = {"ok": "green", "no": "red", "needs root": "yellow"}
    for c in checks:
        table.add_row(c.name, f"[{colour[c.status]}]{c.status}[/]", c.detail, c.meaning)
    Console().print(table)
    unchecked = [c.name for c in checks if c.needs_root]
    if unchecked:
        click.echo(f"{', '.join(unchecked)}: not checked; run as root (sudo ingressmesh doctor)", err=True)
        raise SystemExit(1)
    if not next(c for c in checks if c.name == "nftables").ok:
        raise SystemExit(1)
