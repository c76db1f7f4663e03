"""The VIP fast path on the real kernel: client 1's own namespace plays a container on node 1;
its VIP packets are DNATed there (plan_containers.py, nftables `container` role), the LB
namespace never sees them, the task sees the client's own address, and draining, removal,
refusal and UDP behave as through the LB namespace.  nftables only (IPVS says so clearly)."""
from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import time

import pytest

from ingressmesh.dataplane.layout import Layout
from ingressmesh.ipvs.kernel import IpvsError
from ingressmesh.plan import NamespacePlan, NodePlan, PlanOptions, plan_node
from ingressmesh.plan_containers import LocalContainer, plan_containers
from ingressmesh.testbed import traffic
from ingressmesh.testbed.cluster import APP_ID, EMPTY_VIP, WEB_VIP
from ingressmesh.testbed.topology import TCP_PORT, UDP_PORT

pytestmark = pytest.mark.kernel
ELIGIBLE = {"t1", "t2", "t3"}


@pytest.fixture(autouse=True)
def nftables_only():
    if os.environ.get("INGRESSMESH_BACKEND", "nft") != "nft":
        pytest.skip("the VIP fast path is nftables-only")


@pytest.fixture
def fast(mesh):
    """Node 1 programs client 1's namespace as container `c1`; afterwards it is removed again."""
    applier = mesh.appliers[1]
    plain = applier.layout
    applier.layout = dataclasses.replace(plain, containers={"c1": mesh.bed.client_ns(1)})
    container = LocalContainer("c1", "client1", (APP_ID,))

    def apply(overrides=None, now=None):
        now = time.time() if now is None else now
        cluster = mesh.cluster(overrides)
        plan = plan_containers(plan_node(cluster, "node1", PlanOptions(now=now)), [container])
        report = applier.apply(plan)
        assert report.ok, report.errors
        assert mesh.appliers[2].apply(plan_node(cluster, "node2", PlanOptions(now=now))).ok
        return plan
    apply()
    _flush_conntrack(mesh.bed.lb_ns(1))
    yield apply
    applier.apply(plan_node(mesh.cluster(), "node1", PlanOptions(now=time.time())))  # c1 no longer planned
    applier.layout = plain
    assert _table(mesh.bed.client_ns(1)) == "", "the container's table was not removed"


def _flush_conntrack(ns: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-F"], capture_output=True, timeout=30)


def _flows(ns: str, **match) -> int:
    args = [a for key, value in match.items() for a in (f"--{key.replace('_', '-')}", value)]
    proc = subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-L", *args], capture_output=True, text=True,
                          timeout=30)
    return sum(1 for line in proc.stdout.splitlines() if "src=" in line)


def _table(ns: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "ip", "ingressmesh"],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout


def test_the_vip_is_dnated_in_the_callers_namespace_and_the_task_sees_the_caller(mesh, fast):
    bed = mesh.bed
    spread = traffic.tcp_spread(bed.client_ns(1), WEB_VIP, TCP_PORT, 150)
    assert set(spread) == ELIGIBLE, spread
    assert _flows(bed.lb_ns(1), orig_dst=WEB_VIP) == 0, "a VIP flow went through the LB namespace"
    assert _flows(bed.client_ns(1), orig_dst=WEB_VIP) > 0  # DNATed where it started
    seen = {traffic.tcp_peer(bed.client_ns(1), WEB_VIP, TCP_PORT)[1] for _ in range(20)}
    assert seen == {bed.client_address(1)}, f"the tasks saw {seen}, not the caller"
    # Through the LB namespace (client 2, not programmed) the task sees the LB address, as with Docker.
    via_lb = {traffic.tcp_peer(bed.client_ns(2), WEB_VIP, TCP_PORT)[1] for _ in range(10)}
    assert via_lb <= {bed.lb_address(1), bed.lb_address(2)}, via_lb
    udp = traffic.udp_spread(bed.client_ns(1), WEB_VIP, UDP_PORT, 60)
    assert set(udp) == ELIGIBLE, udp
    assert _flows(bed.lb_ns(1), orig_dst=WEB_VIP) == 0


def test_draining_removal_and_refusal_behave_as_in_the_lb_namespace(mesh, fast):
    bed, now = mesh.bed, time.time()
    for _ in range(200):  # a connection on t2, through the fast path
        sock, name = traffic.open_tcp(bed.client_ns(1), WEB_VIP, TCP_PORT)
        if name == "t2":
            break
        sock.close()
    else:
        raise AssertionError("no connection reached t2")
    with sock:
        fast({"t2": {"health": "unhealthy", "since": now}}, now=now + 1)  # draining
        assert set(traffic.tcp_spread(bed.client_ns(1), WEB_VIP, TCP_PORT, 60)) == {"t1", "t3"}
        assert traffic.exchange(sock, "still-there") == "t2 still-there"
        fast({"t2": {"health": "unhealthy", "since": now}}, now=now + 3600)  # grace over: removed
        assert _flows(bed.client_ns(1), reply_src="10.0.1.12") == 0  # its flows forgotten there too
        with pytest.raises(OSError):
            traffic.exchange(sock, "after-removal")
    outcome, seconds = traffic.refusal_seconds(bed.client_ns(1), EMPTY_VIP, TCP_PORT)
    assert outcome == "refused" and seconds < 1.0, (outcome, seconds)
    assert traffic.udp_refusal(bed.client_ns(1), EMPTY_VIP, UDP_PORT) == "refused"
    assert _flows(bed.lb_ns(1), orig_dst=EMPTY_VIP) == 0


def test_a_connection_opened_before_the_fast_path_keeps_its_path(mesh):
    """A container whose namespace is programmed while a VIP connection is open: the connection
    stays on the LB namespace path (NAT is decided at the first packet), new ones take the fast path."""
    bed, applier = mesh.bed, mesh.appliers[1]
    sock, name = traffic.open_tcp(bed.client_ns(1), WEB_VIP, TCP_PORT)
    plain = applier.layout
    try:
        with sock:
            applier.layout = dataclasses.replace(plain, containers={"c1": bed.client_ns(1)})
            plan = plan_containers(plan_node(mesh.cluster(), "node1", PlanOptions(now=time.time())),
                                   [LocalContainer("c1", "client1", (APP_ID,))])
            assert applier.apply(plan).ok
            for i in range(5):
                assert traffic.exchange(sock, f"old-{i}") == f"{name} old-{i}"
            assert traffic.tcp_peer(bed.client_ns(1), WEB_VIP, TCP_PORT)[1] == bed.client_address(1)
    finally:
        applier.apply(plan_node(mesh.cluster(), "node1", PlanOptions(now=time.time())))
        applier.layout = plain


def test_opted_out_services_and_unknown_namespaces():
    """Pure checks next to the kernel ones: the label keeps a service on the LB path, an unknown
    container namespace is an error naming the container, and IPVS refuses the role by name."""
    from ingressmesh.ipvs.backend import IpvsBackend
    from ingressmesh.testbed.cluster import scenario_cluster
    from ingressmesh.testbed.topology import Testbed
    cluster = scenario_cluster(Testbed(prefix="unit"))
    web = next(s for s in cluster.services if s.name == "web")
    out = dataclasses.replace(web, labels=(("io.ingressmesh.lb.fast_path", "false"),))
    cluster = dataclasses.replace(cluster, services=tuple(out if s is web else s for s in cluster.services))
    plan = plan_containers(plan_node(cluster, "node1", PlanOptions(now=1.0)), [LocalContainer("c9", "app9", (APP_ID,))])
    ctr = plan.namespace("ctr:c9")
    assert ctr is not None and ctr.container_name == "app9"
    assert WEB_VIP not in {e.vip for e in ctr.vips} and EMPTY_VIP in {e.vip for e in ctr.vips}
    with pytest.raises(ValueError, match="container app9: its namespace is not known"):
        Layout().netns_for(ctr)
    with pytest.raises(IpvsError, match="nftables-only"):
        IpvsBackend.apply(object.__new__(IpvsBackend), NamespacePlan(role="container", container_id="c9"))


def _rates(ns: str, address: str, seconds: int, threads: int = 4) -> list[int]:
    """New connections per second from `threads` threads for `seconds` (bounded in time), each
    like an HTTP/1.0 exchange: connect, greeting, "bye", and the server closes first (its side
    and every conntrack on the way keep the connection's tuple in TIME_WAIT)."""
    import socket
    import threading

    from ingressmesh.netns import Netns
    counts = [0] * seconds
    start = time.monotonic()

    def loop():
        with Netns.from_ref(ns).entered():
            while (elapsed := time.monotonic() - start) < seconds:
                try:
                    with socket.create_connection((address, TCP_PORT), timeout=1) as sock:
                        sock.sendall(b"bye\n")
                        while sock.recv(256):
                            pass
                    counts[int(elapsed)] += 1
                except OSError:
                    pass
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(seconds + 5)
    return counts


@pytest.mark.timing
def test_sustained_short_connections_do_not_collapse_on_the_fast_path(mesh, fast):
    """15 s of short connections, the server closing first: a collapse is the rate falling to a
    few percent (one LB-namespace run once fell to ~220/s of ~10,000).  The bound is loose (0.1
    of the run's median for every second but the first and last, 4.5x the collapse seen): this
    Python load itself swings by up to ±45 % between seconds on a 2-core machine; at nice 10 beside
    the swarm lab suites one second fell to 0.18 of the median (201 of 1,129/s), so `make test` now
    runs it alone (marked timing: make host-timing).  The LB-namespace path is measured beside it."""
    bed = mesh.bed
    fast_rates = _rates(bed.client_ns(1), WEB_VIP, 15)
    lb_rates = _rates(bed.client_ns(2), WEB_VIP, 15)  # client 2 is not programmed: the LB namespace
    print(f"new connections per second through the fast path: {fast_rates}; through the LB namespace: {lb_rates}")
    for ns in (bed.lb_ns(1), bed.lb_ns(2), bed.client_ns(1)):
        _flush_conntrack(ns)  # the next tests start without 120 s of TIME_WAIT entries
    assert fast_rates[0] > 100, fast_rates
    steady = fast_rates[1:-1]  # the first second warms up, the last is cut short
    assert min(steady) >= 0.1 * statistics.median(fast_rates), f"the fast path collapsed: {fast_rates}"


class _Containers:
    """LocalContainers as FastPath reads it: client 1's namespace as container c1."""

    def __init__(self, bed):
        from ingressmesh.swarm.local_containers import ContainerFacts
        self.facts = (ContainerFacts("c1", "client1", (APP_ID,), bed.client_ns(1)),)
        self.last_error = ""

    def current(self):
        return self.facts


def test_the_agents_fast_path_thread_programs_keeps_its_limit_and_turns_off(mesh):
    """FastPath (agent/fast_path.py) as the agent runs it: programs the container; with
    --fast-path-max-containers 0 a new container is left on the LB path (no table); a restart
    with --no-fast-path empties a table an earlier run left (new connections take the LB path)."""
    from ingressmesh.agent.docker_layout import DockerNamespaces
    from ingressmesh.agent.fast_path import FastPath
    from ingressmesh.dataplane.apply import kernel_nft_backend
    bed, plan = mesh.bed, plan_node(mesh.cluster(), "node1", PlanOptions(now=time.time()))
    where = DockerNamespaces(exec_root="/run")  # the testbed's namespaces are /run/netns/<name>
    full = FastPath(where, _Containers(bed), kernel_nft_backend, max_containers=0)
    full.plan_changed(plan)
    full.sync()
    assert full.over_limit and _table(bed.client_ns(1)) == ""
    on = FastPath(where, _Containers(bed), max_containers=5)  # the agent's writer: libnftables in-process
    on.plan_changed(plan)
    on.sync()
    assert on.errors == {} and "c1" in on.seen_to_programmed and not on.over_limit
    assert traffic.tcp_peer(bed.client_ns(1), WEB_VIP, TCP_PORT)[1] == bed.client_address(1)
    # A restarted agent whose limit is now 0: the table an earlier run left is kept managed
    # (never left to send to tasks it no longer hears about), and it says so in /healthz.
    again = FastPath(where, _Containers(bed), max_containers=0)
    again.plan_changed(plan_node(mesh.cluster({"t1": {"health": "unhealthy", "since": 0.0}}), "node1",
                                 PlanOptions(now=time.time())))
    again.sync()
    assert again.status()["containers"] == 1 and "10.0.1.11" not in _table(bed.client_ns(1))
    off = FastPath(where, _Containers(bed), kernel_nft_backend, enabled=False)  # a restart with --no-fast-path
    off.plan_changed(plan)
    off.sync()
    assert WEB_VIP not in _table(bed.client_ns(1)) and "hook output" in _table(bed.client_ns(1))
    assert traffic.tcp_peer(bed.client_ns(1), WEB_VIP, TCP_PORT)[1] != bed.client_address(1)  # the LB path
    off.applier.apply(NodePlan(node_id="node1", namespaces=()))  # cleanup: the test's own table
    assert _table(bed.client_ns(1)) == ""
