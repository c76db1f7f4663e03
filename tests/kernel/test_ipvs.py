"""IPVS-specific behaviour, on a kernel that has IPVS (`make test` runs it under QEMU).

On a kernel without IPVS these tests skip, unless INGRESSMESH_REQUIRE_IPVS=1 (set by the
kernel lab), which turns the skip into a failure.
"""
from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time

import pytest

from ingressmesh.dataplane import backends
from ingressmesh.dataplane.apply import kernel_nft_backend
from ingressmesh.ipvs.backend import IpvsBackend, IpvsTimeouts
from ingressmesh.netns import Netns
from ingressmesh.plan import PlanOptions, plan_node
from ingressmesh.testbed.cluster import APP_ID, scenario_cluster
from ingressmesh.testbed.topology import Testbed

pytestmark = pytest.mark.kernel
NOW = time.time()


@pytest.fixture(scope="module", autouse=True)
def ipvs_kernel(root):
    ok, why = backends.ipvs_available()
    if not ok:
        if os.environ.get("INGRESSMESH_REQUIRE_IPVS") == "1":
            pytest.fail(f"IPVS required here: {why}")
        pytest.skip(f"needs a kernel with IPVS ({why}); `make test` runs this under QEMU")


@pytest.fixture
def namespaces(root):
    """Fresh namespaces with one interface each, like a load-balancer endpoint; deleted after."""
    made = []

    def make() -> Netns:
        name = f"imip-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        made.append(name)
        for argv in (["link", "set", "lo", "up"], ["link", "add", "eth0", "type", "dummy"],
                     ["link", "set", "eth0", "up"], ["addr", "add", "10.0.1.251/24", "dev", "eth0"],
                     ["addr", "add", "10.255.0.2/16", "dev", "eth0"]):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        return Netns.from_ref(name)
    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _scenario_plan(services=None):
    overrides = {"t2": {"health": "unhealthy", "since": NOW - 1}}  # draining
    cluster = scenario_cluster(Testbed(prefix="ipvs"), overrides, services)
    return plan_node(cluster, "node1", PlanOptions(now=NOW))


def test_show_prints_the_same_table_for_both_backends(namespaces):
    plan = _scenario_plan()
    for key in (f"lb:{APP_ID}", "ingress"):
        ns_plan = plan.namespace(key)
        nft_ns, ipvs_ns = namespaces(), namespaces()
        kernel_nft_backend(nft_ns).apply(ns_plan)
        IpvsBackend(ipvs_ns).apply(ns_plan)
        nft_rows, ipvs_rows = kernel_nft_backend(nft_ns).read(), IpvsBackend(ipvs_ns).read()
        assert nft_rows and nft_rows == ipvs_rows, (key, nft_rows, ipvs_rows)
        assert any(state == "draining" for row in nft_rows for _, state in row.backends)
        assert any(row.note for row in nft_rows)  # the empty service
        shown = []
        for ns, backend in ((nft_ns, "nftables"), (ipvs_ns, "ipvs")):
            proc = subprocess.run([sys.executable, "-m", "ingressmesh", "show", "--netns", ns.path,
                                   "--backend", backend, "--json"], capture_output=True, text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr
            shown.append(json.loads(proc.stdout)[ns.path])
        assert shown[0] == shown[1]


def test_scheduler_label_reaches_ipvs_and_a_bad_one_falls_back_to_rr(namespaces):
    labels = {"web": {"labels": (("io.ingressmesh.lb.scheduler", "sh"),)},
              "empty": {"labels": (("io.ingressmesh.lb.scheduler", "bogus"),)}}
    plan = _scenario_plan(labels)
    assert any("service empty" in w and "bogus" in w for w in plan.warnings), plan.warnings
    ns = namespaces()
    backend = IpvsBackend(ns)
    backend.apply(plan.namespace(f"lb:{APP_ID}"))
    assert {s.scheduler for s in backend.ipvs.dump().values()} == {"sh"}  # web; empty has no task


def test_timeouts_and_sysctls_are_set(namespaces):
    ns = namespaces()
    IpvsBackend(ns, IpvsTimeouts(tcp=7200, tcpfin=90, udp=60)).apply(_scenario_plan().namespace(f"lb:{APP_ID}"))
    out = ns.run(["ipvsadm", "-L", "--timeout"]).stdout
    assert "7200 90 60" in out, out
    assert ns.sysctl("net.ipv4.vs.expire_nodest_conn") == "1" and ns.sysctl("net.ipv4.vs.conntrack") == "1"
    assert ns.sysctl("net.ipv4.vs.conn_reuse_mode") == "0"


def test_dockers_own_ipvs_services_are_never_touched(namespaces):
    ns = namespaces()
    ns.run(["ipvsadm", "-A", "-f", "256", "-s", "rr"])
    ns.run(["ipvsadm", "-a", "-f", "256", "-r", "10.0.1.99:0", "-m"])
    backend = IpvsBackend(ns)
    plan = _scenario_plan().namespace(f"lb:{APP_ID}")
    backend.apply(plan)
    backend.apply(dataclasses.replace(plan, vips=()))
    backend.cleanup()
    listing = ns.run(["ipvsadm", "-Ln"]).stdout
    assert "FWM  256" in listing and "10.0.1.99" in listing, listing
    assert "1296367" not in listing  # ours (0x4d45xxxx) are gone


def test_a_real_server_changed_behind_our_back_is_repaired(namespaces):
    ns = namespaces()
    backend = IpvsBackend(ns)
    plan = _scenario_plan().namespace(f"lb:{APP_ID}")
    backend.apply(plan)
    mark = next(iter(backend.ipvs.dump()))
    ns.run(["ipvsadm", "-e", "-f", str(mark), "-r", "10.0.1.11:0", "-g", "-w", "5"])  # direct routing, weight 5
    ns.run(["ipvsadm", "-d", "-f", str(mark), "-r", "10.0.1.13:0"])
    assert backend.apply(plan) is not None  # the dump differs from the plan: repaired
    listing = ns.run(["ipvsadm", "-Ln"]).stdout
    assert "10.0.1.11:0                  Masq    1" in listing and "10.0.1.13:0" in listing, listing
    assert backend.apply(plan) is None


def test_a_restarted_backend_keeps_every_service_and_cleanup_removes_all_of_ours(namespaces):
    ns = namespaces()
    plan = _scenario_plan().namespace(f"lb:{APP_ID}")
    first = IpvsBackend(ns)
    first.apply(plan)
    before = first.ipvs.dump()
    restarted = IpvsBackend(ns)  # a new process: reads the marks back from the table
    tx = restarted.apply(plan)  # rebuilds its mark table atomically, touches no IPVS service
    assert tx.full and tx.added == len(restarted.table.elements) and tx.removed == 0
    assert restarted.ipvs.dump() == before and restarted.apply(plan) is None
    assert "9742:" in ns.run(["ip", "rule", "show"]).stdout
    assert ns.run(["ipvsadm", "-L", "--timeout"]).stdout.strip().endswith("86400 120 300")  # the defaults
    restarted.cleanup()
    assert restarted.ipvs.dump() == {}
    rules = ns.run(["ip", "rule", "show"]).stdout
    assert "9741:" not in rules and "9742:" not in rules, rules
    assert ns.run(["ip", "route", "show", "table", "19742"], check=False).stdout.strip() == ""
    assert ns.run(["nft", "list", "table", "ip", "ingressmesh"], check=False).returncode != 0


@pytest.mark.parametrize("scheduler", ["wrr", "lc", "mh", "rr"])
def test_every_scheduler_reaches_the_kernel_and_can_be_changed_in_place(namespaces, scheduler):
    ns = namespaces()
    backend = IpvsBackend(ns)
    backend.apply(_scenario_plan({"web": {"labels": (("io.ingressmesh.lb.scheduler", "sh"),)}}).namespace(f"lb:{APP_ID}"))
    (mark, service), = backend.ipvs.dump().items()
    assert service.scheduler == "sh"
    labels = {"web": {"labels": (("io.ingressmesh.lb.scheduler", scheduler),)}}
    backend.apply(_scenario_plan(labels).namespace(f"lb:{APP_ID}"))
    assert backend.ipvs.dump()[mark].scheduler == scheduler  # same service (mark), new scheduler


def test_the_ipvs_socket_is_opened_by_this_thread_in_the_namespace_without_a_child(namespaces, monkeypatch):
    """pyroute2's `netns=` forks the agent per socket; ours setns's the calling thread instead:
    dumps and changes work with os.fork forbidden, land in the namespace, and leak no fd."""
    ns = namespaces()
    backend = IpvsBackend(ns)
    plan = _scenario_plan().namespace("ingress")  # two published ports with tasks, two without
    backend.apply(plan)

    def no_fork(*args, **kwargs):
        raise AssertionError("os.fork called")
    monkeypatch.setattr(os, "fork", no_fork)
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        services = backend.ipvs.dump()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert services and all(mark >= 0x4D450000 for mark in services)
    assert backend.apply(dataclasses.replace(plan, ports=plan.ports[:1])) is not None  # one service deleted
    left = backend.ipvs.dump()
    monkeypatch.undo()
    assert len(services) == 2 and len(left) == 1, (services, left)
    mark = next(iter(left))
    root = subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True, timeout=30).stdout
    assert f"FWM  {mark}" not in root, root  # in the namespace, not in the test's own
    assert f"FWM  {mark}" in ns.run(["ipvsadm", "-Ln"]).stdout
