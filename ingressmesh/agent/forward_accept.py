"""Let published-port traffic through a host whose FORWARD policy is DROP (dockerd sets it).

Our DNAT sends a published port to the ingress namespace, which the host then *forwards*; a
drop in Docker's iptables filter table cannot be overridden from our own nft table, because
every base chain at the hook must accept.  So, like Docker's DOCKER-INGRESS, one chain of our own
in the filter table, jumped from the top of FORWARD, accepts exactly the published ports towards
the ingress gateway and their replies.  The chain is rewritten whole with `iptables-restore
--noflush`, one atomic commit, so it never holds half a port list.
"""
from __future__ import annotations

import subprocess

CHAIN = "INGRESSMESH-INGRESS"


def render_chain(gateway: str, ports: list[tuple[str, int]]) -> str:
    lines = ["*filter", f":{CHAIN} - [0:0]"]
    for protocol, port in sorted(set(ports)):
        lines.append(f"-A {CHAIN} -d {gateway}/32 -p {protocol} -m {protocol} --dport {port} -j ACCEPT")
        lines.append(f"-A {CHAIN} -s {gateway}/32 -p {protocol} -m {protocol} --sport {port} "
                     f"-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    lines += [f"-A {CHAIN} -j RETURN", "COMMIT", ""]
    return "\n".join(lines)


def _iptables(argv: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)


def sync_forward_accept(gateway: str, ports: list[tuple[str, int]]) -> None:
    """Program the chain for `ports` (protocol, published port) and make sure FORWARD jumps to it."""
    done = _iptables(["iptables-restore", "--noflush", "--wait"], render_chain(gateway, ports))
    if done.returncode != 0:
        raise OSError(f"iptables-restore refused the {CHAIN} chain: {done.stderr.strip()}")
    ensure_jump()


def ensure_jump() -> None:
    """FORWARD jumps to our chain first (Docker's own DOCKER-USER jump is re-inserted above it
    only when dockerd restarts, and that chain returns by default)."""
    if _iptables(["iptables", "-w", "-C", "FORWARD", "-j", CHAIN]).returncode != 0:
        inserted = _iptables(["iptables", "-w", "-I", "FORWARD", "1", "-j", CHAIN])
        if inserted.returncode != 0:
            raise OSError(f"iptables could not jump FORWARD to {CHAIN}: {inserted.stderr.strip()}")


def remove_forward_accept() -> None:
    """Undo sync_forward_accept (for cleanup); absent pieces are fine."""
    while _iptables(["iptables", "-w", "-D", "FORWARD", "-j", CHAIN]).returncode == 0:
        pass
    _iptables(["iptables", "-w", "-F", CHAIN])
    _iptables(["iptables", "-w", "-X", CHAIN])
