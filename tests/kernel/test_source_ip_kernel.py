"""Issue 21 on a real kernel: a task reached through a published port sees the client's address.

The conformance testbed (two nodes' host and ingress namespaces, the ingress "overlay" as a
bridge, tasks t1 on node 1 and t2, t3 on node 2), with what Docker does that matters here:
each ingress namespace's MAC on the overlay is 02:42 + its address.  The tasks differ the way
real ones do: t1 has no default route at all, t2 and t3 have their own default route on another
interface (Docker's docker_gwbridge: here a veth whose gateway never answers, so a reply that
takes it is lost), and t3 also has strict reverse-path filtering (`all.rp_filter=1`).
"""
from __future__ import annotations

import subprocess
import time

import pytest

from ingressmesh.dataplane.reply_routes import TABLE, apply_reply_routes
from ingressmesh.dataplane.view import SOURCE_KEPT
from ingressmesh.netns import Netns
from ingressmesh.plan_source_ip import SOURCE_IP_LABEL, docker_overlay_mac, plan_reply_routes
from ingressmesh.testbed import traffic
from ingressmesh.testbed.cluster import WEB_TCP, WEB_UDP

CLIENT = "10.99.0.100"  # the testbed's external client namespace
PRESERVE = {"web": {"labels": ((SOURCE_IP_LABEL, "preserve"),)}}
TASK_NODE = {"t1": 1, "t2": 2, "t3": 2}
ELIGIBLE = set(TASK_NODE)


def _ip(*argv):
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def source_mesh(mesh_module):
    bed = mesh_module.bed
    for i in (1, 2):
        _ip("-n", bed.ingress_ns(i), "link", "set", "eth0", "address", docker_overlay_mac(bed.ingress_address(i)))
    for name in ("t2", "t3"):
        ns = bed.task_ns(name)
        _ip("-n", ns, "link", "add", "gw", "type", "veth", "peer", "name", "gwp")  # no dummy module here
        _ip("-n", ns, "addr", "add", "192.168.77.2/24", "dev", "gw")
        _ip("-n", ns, "link", "set", "gw", "up")
        _ip("-n", ns, "link", "set", "gwp", "up")
        _ip("-n", ns, "route", "add", "default", "via", "192.168.77.1", "dev", "gw")
    Netns.from_ref(bed.task_ns("t3")).set_sysctl("net.ipv4.conf.all.rp_filter", "1")
    mesh_module.apply(services=PRESERVE)
    cluster = mesh_module.cluster(services=PRESERVE)
    for node in (1, 2):
        for routes in plan_reply_routes(cluster, f"node{node}", {t: t for t in ("t1", "t2", "t3", "t4")}):
            apply_reply_routes(Netns.from_ref(bed.task_ns(routes.container_id)), routes)
    return mesh_module


def _peers(spread):
    return {peer for _, peer in spread}


def test_tcp_through_each_node_shows_the_client_to_tasks_on_both_nodes(source_mesh):
    bed = source_mesh.bed
    for node in (1, 2):
        seen = [traffic.tcp_peer(bed.ext_ns, bed.node_address(node), WEB_TCP) for _ in range(60)]
        assert {name for name, _ in seen} == ELIGIBLE, f"node{node}: {seen}"
        assert _peers(seen) == {CLIENT}, f"node{node}: {seen}"


def _conntrack(ns: str, *filters: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, "conntrack", "-L", "-p", "tcp", *filters],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr  # an empty answer must mean no entry, not a refused filter
    return done.stdout


def test_replies_return_through_the_receiving_node(source_mesh):
    bed = source_mesh.bed
    sock, name = _connection_to(bed, "t2", node=1)
    with sock:
        sport = str(sock.getsockname()[1])
        assert traffic.exchange(sock, "peer?") == f"t2 peer {CLIENT}"
        # Node 1's ingress namespace holds the flow, established, not SNATed: the reply goes to the client.
        flow = _conntrack(bed.ingress_ns(1), "--orig-src", CLIENT, "--sport", sport, "--state", "ESTABLISHED")
        assert "ESTABLISHED" in flow and f"src=10.255.0.12 dst={CLIENT} sport=80 dport={sport}" in flow, flow
        # Node 2's never saw it (an earlier, closed connection through node 2 may have had the same client
        # port: the kernel reuses a port toward another address while its old entry waits out TIME_WAIT, so
        # only a live entry counts); in t2's namespace it carries node 1's mark.
        live_on_node2 = _conntrack(bed.ingress_ns(2), "--orig-src", CLIENT, "--sport", sport, "--state", "ESTABLISHED")
        assert f"sport={sport}" not in live_on_node2, live_on_node2
        marked = _conntrack(bed.task_ns("t2"), "--orig-src", CLIENT, "--sport", sport, "--mark", str(0x0AFF0002))
        assert "ESTABLISHED" in marked, marked


def _connection_to(bed, wanted, node):
    for _ in range(200):
        sock, name = traffic.open_tcp(bed.ext_ns, bed.node_address(node), WEB_TCP)
        if name == wanted:
            return sock, name
        sock.close()
    raise AssertionError(f"never reached {wanted}")


def test_udp_through_each_node_shows_the_client(source_mesh):
    bed = source_mesh.bed
    for node in (1, 2):
        seen = [traffic.udp_peer(bed.ext_ns, bed.node_address(node), WEB_UDP) for _ in range(60)]
        assert {name for name, _ in seen} == ELIGIBLE, f"node{node}: {seen}"
        assert _peers(seen) == {CLIENT}, f"node{node}: {seen}"


def test_a_task_namespace_holds_only_our_table_and_rules(source_mesh):
    ns = Netns.from_ref(source_mesh.bed.task_ns("t3"))
    rules = ns.run(["ip", "-4", "rule", "show"]).stdout
    assert "fwmark 0xaff0002 lookup 184483842" in rules and "fwmark 0xaff0003 lookup 184483843" in rules, rules
    assert ns.sysctl("net.ipv4.conf.all.rp_filter") == "1"  # the task's own strictness is kept
    assert TABLE in ns.run(["nft", "list", "tables"]).stdout


def test_snat_path_for_a_service_without_the_label_and_earlier_connections_go_on(source_mesh):
    bed = source_mesh.bed
    kept, name = _connection_to(bed, "t3", node=1)
    fresh_ports = iter((range(20000, 20045), range(20045, 20090)))
    try:
        source_mesh.apply(services={})  # the label is gone: SNAT again for new connections
        for node in (1, 2):
            seen = [traffic.tcp_peer(bed.ext_ns, bed.node_address(node), WEB_TCP) for _ in range(45)]
            assert {n for n, _ in seen} == ELIGIBLE and _peers(seen) == {bed.ingress_address(node)}, seen
            # Source ports below the kernel's ephemeral range, unused until now: a port handed out
            # again would find the earlier probes' UDP conntrack entries (30 s), which keep the
            # path they took, as any UDP flow does (docs/routing-mesh.md).
            udp = [traffic.udp_peer(bed.ext_ns, bed.node_address(node), WEB_UDP, source_port=port)
                   for port in next(fresh_ports)]
            assert {n for n, _ in udp} == ELIGIBLE and _peers(udp) == {bed.ingress_address(node)}, udp
        # The connection opened while the source was kept still answers, still seeing the client.
        assert traffic.exchange(kept, "peer?") == f"t3 peer {CLIENT}"
        opened_before = [traffic.open_tcp(bed.ext_ns, bed.node_address(1), WEB_TCP) for _ in range(3)]
        source_mesh.apply(services=PRESERVE)  # and back: the SNATed ones go on too
        time.sleep(0.2)
        for sock, who in opened_before:
            with sock:
                assert traffic.exchange(sock, "peer?") == f"{who} peer {bed.ingress_address(1)}"
        assert _peers([traffic.tcp_peer(bed.ext_ns, bed.node_address(1), WEB_TCP) for _ in range(10)]) == {CLIENT}
    finally:
        kept.close()


def _notes(mesh, node):
    """What `ingressmesh show` reads from node's ingress namespace: front-end -> note."""
    return {row.frontend: row.note for row in mesh.appliers[node].backend("ingress").read()}


def test_agent_wide_default_keeps_the_client_for_a_service_without_the_label(source_mesh):
    """`ingressmesh agent --source-ip preserve`: every service without the label keeps the client's
    address (its tasks get the same reply routes); the label, snat, still wins for its service."""
    bed = source_mesh.bed
    unlabelled = source_mesh.cluster(services={})
    for node in (1, 2):
        routes = plan_reply_routes(unlabelled, f"node{node}", {t: t for t in TASK_NODE}, default="preserve")
        assert {r.task_id for r in routes} == {t for t, n in TASK_NODE.items() if n == node}
        for r in routes:  # what the agent of that node does: the same routes, applied again
            apply_reply_routes(Netns.from_ref(bed.task_ns(r.container_id)), r)
    fresh_ports = iter((range(20090, 20135), range(20135, 20180)))
    try:
        source_mesh.apply(services={}, source_ip="preserve")
        for node in (1, 2):
            seen = [traffic.tcp_peer(bed.ext_ns, bed.node_address(node), WEB_TCP) for _ in range(45)]
            assert {n for n, _ in seen} == ELIGIBLE and _peers(seen) == {CLIENT}, seen
            # fresh source ports, as in the test above
            udp = [traffic.udp_peer(bed.ext_ns, bed.node_address(node), WEB_UDP, source_port=port)
                   for port in next(fresh_ports)]
            assert {n for n, _ in udp} == ELIGIBLE and _peers(udp) == {CLIENT}, udp
            notes = _notes(source_mesh, node)
            assert notes[f"tcp/{WEB_TCP}"] == notes[f"udp/{WEB_UDP}"] == SOURCE_KEPT, notes
        snat = {"web": {"labels": ((SOURCE_IP_LABEL, "snat"),)}}
        source_mesh.apply(services=snat, source_ip="preserve")
        seen = [traffic.tcp_peer(bed.ext_ns, bed.node_address(2), WEB_TCP) for _ in range(30)]
        assert {n for n, _ in seen} == ELIGIBLE and _peers(seen) == {bed.ingress_address(2)}, seen
        assert SOURCE_KEPT not in _notes(source_mesh, 2).values()
    finally:
        source_mesh.apply(services=PRESERVE)
