"""The fast path as the agent runs it (agent/fast_path.py), on the real kernel: libnftables
in-process in each container namespace, a container that holds packet-filter rules of its own
stays on the LB path (issue 19.9), and a container that starts during a burst of changes
converges to the same table as its neighbours."""
from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import time

import pytest

from ingressmesh.agent import fast_path as fast_path_module
from ingressmesh.agent.docker_layout import DockerNamespaces
from ingressmesh.agent.fast_path import FastPath
from ingressmesh.netns import Netns
from ingressmesh.nft.libnft import LibNft
from ingressmesh.nft.own_rules import own_rules
from ingressmesh.nft.reader import state_from_json
from ingressmesh.nft.render import desired_state
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.plan_containers import LocalContainer, plan_containers
from ingressmesh.swarm.local_containers import ContainerFacts
from ingressmesh.testbed import traffic
from ingressmesh.testbed.cluster import APP_ID, WEB_VIP
from ingressmesh.testbed.topology import TCP_PORT

pytestmark = pytest.mark.kernel
WHERE = DockerNamespaces(exec_root="/run")  # the testbed's namespaces are /run/netns/<name>


@pytest.fixture(autouse=True)
def nftables_only():
    if os.environ.get("INGRESSMESH_BACKEND", "nft") != "nft":
        pytest.skip("the VIP fast path is nftables-only")


class _Containers:
    """LocalContainers as FastPath reads it."""

    def __init__(self, *facts):
        self.facts, self.last_error = tuple(facts), ""

    def current(self):
        return self.facts


def _nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True, check=True, timeout=30)


def _elements(ns: str) -> frozenset:
    document = LibNft(Netns.from_ref(ns)).list_table()
    return state_from_json(document).elements if document else frozenset()


def test_libnft_writes_in_the_namespace_and_the_thread_comes_back(scratch):
    """A script through libnftables lands in the target namespace only, and the calling thread
    is back in its own namespace afterwards (the root namespace never gets our table)."""
    before = os.readlink("/proc/thread-self/ns/net")
    nft = LibNft(scratch)
    nft.run_script("table ip ingressmesh { set s { type ipv4_addr; }\n}\nadd element ip ingressmesh s { 10.9.9.9 }\n")
    assert os.readlink("/proc/thread-self/ns/net") == before
    assert nft.has_table() and "10.9.9.9" in subprocess.run(
        ["ip", "netns", "exec", scratch.name, "nft", "list", "table", "ip", "ingressmesh"],
        capture_output=True, text=True, timeout=30).stdout
    assert "10.9.9.9" not in str(LibNft(Netns("")).list_table()), "the root namespace got the element"
    with pytest.raises(Exception, match="refused in"):
        nft.run_script("add element ip ingressmesh nosuchset { 10.1.1.1 }\n")
    assert os.readlink("/proc/thread-self/ns/net") == before


def test_own_nft_and_legacy_iptables_rules_are_found(scratch):
    assert own_rules(LibNft(scratch), scratch) == []
    _nft(scratch.name, "table ip ingressmesh { chain output { type nat hook output priority -100; }\n}\n"
                       "table ip nat { chain OUTPUT { type nat hook output priority -100; ip daddr 127.0.0.11 "
                       "counter; }\n}\n")
    assert own_rules(LibNft(scratch), scratch) == [], "ours and a nat table (Docker's DNS) are not the container's"
    _nft(scratch.name, "table inet mine { chain out { type filter hook output priority 0; ip daddr 10.0.1.2 drop; }\n}\n")
    assert own_rules(LibNft(scratch), scratch) == ["inet mine"]
    _nft(scratch.name, "delete table inet mine\n")
    subprocess.run(["ip", "netns", "exec", scratch.name, "iptables-legacy", "-A", "OUTPUT", "-d", "10.0.1.2",
                    "-j", "DROP"], check=True, timeout=30)
    assert own_rules(LibNft(scratch), scratch) == ["iptables-legacy filter"]


def test_a_container_with_its_own_drop_rule_stays_on_the_lb_path(mesh, monkeypatch):
    """Issue 19.9: the fast path's DNAT (nat output, -100) runs before the container's own filter
    output rules, which would then see the task's address and miss.  Such a container keeps the
    LB path, where its rule sees (and here refuses) the VIP; one that adds a rule after it was
    programmed loses its table at the next check; the label opts it in."""
    bed, plan = mesh.bed, plan_node(mesh.cluster(), "node1", PlanOptions(now=time.time()))
    ns = bed.client_ns(1)
    own = f"table ip mine {{ chain out {{ type filter hook output priority 0; ip daddr {WEB_VIP} reject; }}\n}}\n"
    facts = ContainerFacts("c1", "client1", (APP_ID,), ns)
    try:
        _nft(ns, own)
        fast = FastPath(WHERE, _Containers(facts))
        fast.plan_changed(plan)
        fast.sync()
        assert fast.status()["own_rules"] == {"c1": ["ip mine"]} and _elements(ns) == frozenset()
        with pytest.raises(OSError):
            traffic.open_tcp(ns, WEB_VIP, TCP_PORT, timeout=2)  # its own rule still refuses the VIP
        _nft(ns, "delete table ip mine\n")
        monkeypatch.setattr(fast_path_module, "RECHECK_AT", (0.0, 0.0, 0.0))
        fast.sync(recheck=True)
        assert fast.status()["own_rules"] == {} and _elements(ns), "not programmed once the rule was gone"
        assert traffic.tcp_peer(ns, WEB_VIP, TCP_PORT)[1] == bed.client_address(1)  # the fast path
        _nft(ns, own)  # added after it was programmed (an entrypoint a moment after the start)
        fast.sync(recheck=True)
        assert _elements(ns) == frozenset() and "c1" in fast.status()["own_rules"]
        with pytest.raises(OSError):
            traffic.open_tcp(ns, WEB_VIP, TCP_PORT, timeout=2)
        opted = FastPath(WHERE, _Containers(dataclasses.replace(facts, fast_path="true")))
        opted.plan_changed(plan)
        opted.sync()
        assert opted.errors == {} and _elements(ns), "the label opts it in"
        opted.applier.apply(dataclasses.replace(plan, namespaces=(), held=()))
        assert _elements(ns) == frozenset()
    finally:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "ip", "mine"], capture_output=True,
                       timeout=30)


def test_a_container_starting_during_a_burst_converges_to_its_neighbours_table(mesh, root):
    """The agent's fast-path thread under a burst of 40 plan changes (a task flapping between
    healthy and unhealthy, 5 ms apart) while containers start in the middle of it: at the end
    every namespace holds exactly the table of the last plan, the late ones too."""
    prefix = f"imfb-{secrets.token_hex(3)}"
    names = [f"{prefix}-{i}" for i in range(6)]
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    facts = [ContainerFacts(f"c{i}", name, (APP_ID,), name) for i, name in enumerate(names)]
    containers = _Containers(*facts[:3])
    fast = FastPath(WHERE, containers).start()
    try:
        last = None
        for n in range(40):
            overrides = {"t1": {"health": "unhealthy", "since": 0.0}} if n % 2 else None
            last = plan_node(mesh.cluster(overrides), "node1", PlanOptions(now=time.time()))
            fast.plan_changed(last)
            if n in (13, 27):  # containers start mid-burst
                containers.facts = tuple(facts[:3 + (3 if n == 27 else 1)])
                fast.containers_changed()
            time.sleep(0.005)
        wanted = desired_state(plan_containers(last, [LocalContainer("x", "x", (APP_ID,))]).namespace("ctr:x"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            tables = [_elements(name) for name in names]
            if all(t == wanted.elements for t in tables):
                break
            time.sleep(0.1)
        assert all(t == wanted.elements for t in tables), [len(t ^ wanted.elements) for t in tables]
        assert set(fast.seen_to_programmed) == {f.id for f in facts} and fast.errors == {}
    finally:
        fast.stop()
        containers.facts = ()
        fast.sync()
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)
