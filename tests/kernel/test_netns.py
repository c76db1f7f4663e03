"""The namespace handle: by name or path, commands and sysctls land in that namespace only."""
import os
import socket

import pytest

from ingressmesh.netns import Netns, NetnsError

pytestmark = pytest.mark.kernel


def test_sysctl_is_set_in_the_namespace_and_not_in_ours(scratch):
    ns = scratch
    ours = Netns.from_ref("").sysctl("net.ipv4.conf.all.forwarding")
    ns.set_sysctl("net.ipv4.ip_forward", "1")
    assert ns.sysctl("net.ipv4.ip_forward") == "1"
    assert Netns.from_ref("").sysctl("net.ipv4.conf.all.forwarding") == ours
    assert Netns.from_ref(scratch.path).sysctl("net.ipv4.ip_forward") == "1"  # by path
    key = "net.netfilter.nf_conntrack_tcp_timeout_established"  # conntrack settings are per namespace too
    root_value = Netns.from_ref("").sysctl(key)
    ns.set_sysctl(key, "7200")
    assert ns.sysctl(key) == "7200" and Netns.from_ref("").sysctl(key) == root_value


def test_commands_and_sockets_belong_to_the_namespace(scratch):
    ns = scratch
    links = ns.run(["ip", "-o", "link"]).stdout
    assert links.count("\n") == 1 and "lo" in links  # a fresh namespace has only lo
    with ns.entered():
        sock = socket.socket()
    with sock:
        with pytest.raises(OSError):  # lo is down in a fresh namespace: nothing is reachable
            sock.settimeout(1)
            sock.connect(("127.0.0.1", 9))
    assert os.readlink("/proc/thread-self/ns/net") == os.readlink("/proc/self/ns/net")  # we came back


def test_a_missing_namespace_is_a_clear_error():
    ns = Netns.from_ref("imns-does-not-exist")
    with pytest.raises(NetnsError, match="imns-does-not-exist does not exist"):
        ns.run(["true"])
    with pytest.raises(NetnsError, match="does not exist"):
        ns.set_sysctl("net.ipv4.ip_forward", "1")
