"""What the agent adds around the backends in Docker's namespaces: VIP /32s and FORWARD accepts."""
import secrets
import subprocess
import sys

import pytest

from ingressmesh.agent.forward_accept import CHAIN, remove_forward_accept, sync_forward_accept
from ingressmesh.agent.vip_aliases import sync_vip_aliases
from ingressmesh.netns import Netns
from ingressmesh.testbed.traffic import tcp_who


def _addresses(ns: Netns) -> set[str]:
    out = ns.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    return {line.split()[3] for line in out.splitlines()}


def test_vip_aliases_follow_the_plan_and_leave_other_addresses(scratch):
    scratch.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"])  # no dummy module here
    scratch.run(["ip", "addr", "add", "10.9.0.5/24", "dev", "eth0"])
    scratch.run(["ip", "addr", "add", "192.168.7.7/32", "dev", "eth0"])  # not in the subnet: not ours
    assert sync_vip_aliases(scratch, "10.9.0.5", {"10.9.0.2", "10.9.0.3"}) == (2, 0)
    assert _addresses(scratch) == {"10.9.0.5/24", "192.168.7.7/32", "10.9.0.2/32", "10.9.0.3/32"}
    assert sync_vip_aliases(scratch, "10.9.0.5", {"10.9.0.3"}) == (0, 1)
    assert sync_vip_aliases(scratch, "10.9.0.5", {"10.9.0.3"}) == (0, 0)
    assert _addresses(scratch) == {"10.9.0.5/24", "192.168.7.7/32", "10.9.0.3/32"}
    with pytest.raises(ValueError, match="no interface holds the lb address 10.9.0.99"):
        sync_vip_aliases(scratch, "10.9.0.99", {"10.9.0.3"})


@pytest.fixture
def routed(root):
    """client 10.8.1.2 -- router (FORWARD policy DROP) -- server 10.8.2.2 running an echo on 8080."""
    tag = secrets.token_hex(3)
    names = {role: f"imfw-{role}-{tag}" for role in ("client", "router", "server")}
    for name in names.values():
        subprocess.run(["ip", "netns", "add", name], check=True)
    c, r, s = (Netns.from_ref(names[k]) for k in ("client", "router", "server"))
    subprocess.run(["ip", "-n", names["router"], "link", "add", "c0", "type", "veth", "peer", "eth0",
                    "netns", names["client"]], check=True)
    subprocess.run(["ip", "-n", names["router"], "link", "add", "s0", "type", "veth", "peer", "eth0",
                    "netns", names["server"]], check=True)
    for ns, commands in ((c, [["ip", "addr", "add", "10.8.1.2/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                              ["ip", "route", "add", "default", "via", "10.8.1.1"]]),
                         (s, [["ip", "addr", "add", "10.8.2.2/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                              ["ip", "route", "add", "default", "via", "10.8.2.1"]]),
                         (r, [["ip", "addr", "add", "10.8.1.1/24", "dev", "c0"], ["ip", "link", "set", "c0", "up"],
                              ["ip", "addr", "add", "10.8.2.1/24", "dev", "s0"], ["ip", "link", "set", "s0", "up"],
                              ["iptables", "-w", "-P", "FORWARD", "DROP"]])):
        ns.run(["ip", "link", "set", "lo", "up"])
        for argv in commands:
            ns.run(argv)
    r.set_sysctl("net.ipv4.ip_forward", "1")
    server = subprocess.Popen(s.command([sys.executable, "-m", "ingressmesh.testbed.echo", "--name", "srv",
                                         "--tcp", "8080", "--tcp", "9090"]), stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        yield names, r
    finally:
        server.kill()
        server.wait(timeout=10)
        for name in names.values():
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_forward_accept_opens_exactly_the_published_ports(routed):
    names, router = routed
    client = names["client"]
    with pytest.raises(OSError):
        tcp_who(client, "10.8.2.2", 8080)  # dropped by the FORWARD policy
    with router.entered():
        sync_forward_accept("10.8.2.2", [("tcp", 8080)])
        sync_forward_accept("10.8.2.2", [("tcp", 8080)])  # idempotent: one jump, one set of rules
    assert tcp_who(client, "10.8.2.2", 8080) == "srv"
    with pytest.raises(OSError):
        tcp_who(client, "10.8.2.2", 9090)  # not published: still dropped
    rules = router.run(["iptables", "-w", "-S", "FORWARD"]).stdout.splitlines()
    assert rules[1] == f"-A FORWARD -j {CHAIN}" and rules.count(f"-A FORWARD -j {CHAIN}") == 1
    with router.entered():
        sync_forward_accept("10.8.2.2", [("tcp", 9090)])  # the port list is replaced whole
    assert tcp_who(client, "10.8.2.2", 9090) == "srv"
    with pytest.raises(OSError):
        tcp_who(client, "10.8.2.2", 8080)
    with router.entered():
        remove_forward_accept()
    assert CHAIN not in router.run(["iptables", "-w", "-S"]).stdout


LIBIPTC_ACCEPT = """
import iptc  # python-iptables: the design card's package, writing through libiptc
chain = iptc.Chain(iptc.Table(iptc.Table.FILTER), "FORWARD")
rule = iptc.Rule()
rule.protocol = "tcp"
rule.target = iptc.Target(rule, "ACCEPT")
chain.insert_rule(rule)
"""


def test_a_libiptc_accept_cannot_undo_an_nft_flavour_drop(routed):
    """Why packet rules do not go through python-iptables: on a host whose iptables is the nft
    flavour (Debian 12's default, the one dockerd uses to set FORWARD to DROP), libiptc writes the
    legacy x_tables filter table, a second table at the same hook.  A packet must be accepted by
    both, so its ACCEPT changes nothing, and the operator's `iptables -S` does not even show it."""
    names, router = routed
    client = names["client"]
    router.run([sys.executable, "-c", LIBIPTC_ACCEPT])
    assert "-A FORWARD -p tcp -j ACCEPT" in router.run(["iptables-legacy", "-w", "-S", "FORWARD"]).stdout
    nft_flavour = router.run(["iptables", "-w", "-S", "FORWARD"]).stdout
    assert "-P FORWARD DROP" in nft_flavour and "ACCEPT" not in nft_flavour  # invisible to `iptables`
    with pytest.raises(OSError):
        tcp_who(client, "10.8.2.2", 8080)  # still dropped by the nft-flavour policy
    with router.entered():
        sync_forward_accept("10.8.2.2", [("tcp", 8080)])  # ingressmesh's way: the flavour dockerd uses
    assert tcp_who(client, "10.8.2.2", 8080) == "srv"
