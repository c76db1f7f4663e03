"""The IPVS backend next to Docker's own IPVS mesh, on a kernel with IPVS (`make kernel-lab`).

Docker marks the same packets in the same namespaces (iptables mangle PREROUTING for published
ports, mangle INPUT `-d VIP` for VIPs, both at priority -150) and IPVS picks a fwmark service by
the mark a packet has when it reaches IPVS.  These tests program Docker's rules and fwmark
services as the swarm-in-a-VM dump shows them (recipes/swarm-in-ipvs-vm), then count, per IPVS
service, who got each new connection: ours must get every one while our table is there, Docker's
none, and removing our table must hand every new connection back to Docker's service.
"""
from __future__ import annotations

import os
import time

import pytest

from ingressmesh.dataplane import backends
from ingressmesh.netns import Netns
from ingressmesh.testbed import traffic
from ingressmesh.testbed.docker_mesh import STATS_SETTLE_SECONDS, docker_state, fwmark_connections, is_ours
from ingressmesh.testbed.cluster import WEB_TCP, WEB_VIP
from ingressmesh.testbed.topology import TCP_PORT

pytestmark = pytest.mark.kernel
DOCKER_PORT_MARK, DOCKER_VIP_MARK = 0x100, 0x101
CONNECTIONS = 60


@pytest.fixture(scope="module", autouse=True)
def ipvs_kernel(root, backend_kit):
    ok, why = backends.ipvs_available()
    if not ok or os.environ.get("INGRESSMESH_BACKEND") != "ipvs":
        if os.environ.get("INGRESSMESH_REQUIRE_IPVS") == "1":
            pytest.fail(f"IPVS and INGRESSMESH_BACKEND=ipvs required here: {why}")
        pytest.skip(f"needs a kernel with IPVS and INGRESSMESH_BACKEND=ipvs ({why}); `make kernel-lab` runs it")


def ours(counts: dict[int, int]) -> int:
    return sum(conns for mark, conns in counts.items() if is_ours(mark))


def _docker_rules(mesh):
    """Docker's half on node 1, as dockerd programs it where IPVS works: the published port's
    DNAT to ingress_sbox in the host namespace, the VIP as a local
    /32 on the LB endpoint, mangle marks and one fwmark service per front-end, whose only real
    server is task t1 (so a connection it took is also visible in who answered)."""
    bed = mesh.bed
    lb, ingress = Netns.from_ref(bed.lb_ns(1)), Netns.from_ref(bed.ingress_ns(1))
    t1_ingress, t1_app = bed.task_addresses(bed.tasks[0])
    lb.run(["ip", "addr", "add", f"{WEB_VIP}/32", "dev", "eth0"])
    lb.run(["iptables", "-t", "mangle", "-A", "INPUT", "-d", f"{WEB_VIP}/32", "-j", "MARK",
            "--set-mark", str(DOCKER_VIP_MARK)])
    lb.run(["ipvsadm", "-A", "-f", str(DOCKER_VIP_MARK), "-s", "rr"])
    lb.run(["ipvsadm", "-a", "-f", str(DOCKER_VIP_MARK), "-r", f"{t1_app}:0", "-m"])
    ingress.run(["iptables", "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "--dport", str(WEB_TCP),
                 "-j", "MARK", "--set-mark", str(DOCKER_PORT_MARK)])
    ingress.run(["ipvsadm", "-A", "-f", str(DOCKER_PORT_MARK), "-s", "rr"])
    ingress.run(["ipvsadm", "-a", "-f", str(DOCKER_PORT_MARK), "-r", f"{t1_ingress}:{TCP_PORT}", "-m"])
    ingress.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "ipvs", "--ipvs", "-d", "10.255.0.0/16",
                 "-j", "SNAT", "--to-source", bed.ingress_address(1)])
    lb.run(["iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "ipvs", "--ipvs", "-d", "10.0.1.0/24",
            "-j", "SNAT", "--to-source", bed.lb_address(1)])
    host = Netns.from_ref(bed.node_ns(1))  # DOCKER-INGRESS: local published ports to ingress_sbox
    host.run(["iptables", "-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-p", "tcp",
              "--dport", str(WEB_TCP), "-j", "DNAT", "--to-destination", f"172.18.0.2:{WEB_TCP}"])
    return lb, ingress, host


def test_every_new_connection_goes_to_ours_while_programmed_and_to_dockers_after_cleanup(mesh):
    bed = mesh.bed
    lb, ingress, host = _docker_rules(mesh)
    docker = (("lb", lb), ("ingress", ingress), ("host", host))
    try:
        docker_before = {name: docker_state(ns) for name, ns in docker}
        mesh.apply()  # reprogram after Docker's rules exist, as an agent would
        time.sleep(STATS_SETTLE_SECONDS)
        vip_before, port_before = fwmark_connections(lb), fwmark_connections(ingress)

        vip_spread = traffic.tcp_spread(bed.client_ns(1), WEB_VIP, TCP_PORT, CONNECTIONS)
        port_spread = traffic.tcp_spread(bed.ext_ns, bed.node_address(1), WEB_TCP, CONNECTIONS)
        time.sleep(STATS_SETTLE_SECONDS)
        vip_after, port_after = fwmark_connections(lb), fwmark_connections(ingress)

        # Docker's services got nothing; ours got every connection, spread over our tasks.
        assert vip_after.get(DOCKER_VIP_MARK, 0) == vip_before.get(DOCKER_VIP_MARK, 0), (vip_before, vip_after)
        assert port_after.get(DOCKER_PORT_MARK, 0) == port_before.get(DOCKER_PORT_MARK, 0), (port_before, port_after)
        assert ours(vip_after) - ours(vip_before) == CONNECTIONS, (vip_before, vip_after)
        assert ours(port_after) - ours(port_before) == CONNECTIONS, (port_before, port_after)
        assert len(vip_spread) >= 2 and len(port_spread) >= 2, (vip_spread, port_spread)
        # Docker's own rules and services were never modified by ours.
        assert {name: docker_state(ns) for name, ns in docker} == docker_before

        # Hand-back: without our table every new connection is Docker's again.
        for _, _, backend in mesh.appliers[1].backends.values():
            backend.cleanup()
        handed = traffic.tcp_spread(bed.client_ns(1), WEB_VIP, TCP_PORT, 10)
        handed_port = traffic.tcp_spread(bed.ext_ns, bed.node_address(1), WEB_TCP, 10)
        time.sleep(STATS_SETTLE_SECONDS)
        assert set(handed) == {"t1"} and set(handed_port) == {"t1"}, (handed, handed_port)
        assert fwmark_connections(lb)[DOCKER_VIP_MARK] - vip_after.get(DOCKER_VIP_MARK, 0) == 10
        assert fwmark_connections(ingress)[DOCKER_PORT_MARK] - port_after.get(DOCKER_PORT_MARK, 0) == 10
        assert {name: docker_state(ns) for name, ns in docker} == docker_before
    finally:
        lb.run(["ipvsadm", "-D", "-f", str(DOCKER_VIP_MARK)], check=False)
        ingress.run(["ipvsadm", "-D", "-f", str(DOCKER_PORT_MARK)], check=False)
        for ns in (lb, ingress):
            ns.run(["iptables", "-t", "mangle", "-F"], check=False)
            ns.run(["iptables", "-t", "nat", "-F", "POSTROUTING"], check=False)
        host.run(["iptables", "-t", "nat", "-F", "PREROUTING"], check=False)
        lb.run(["ip", "addr", "del", f"{WEB_VIP}/32", "dev", "eth0"], check=False)
        mesh.appliers[1].backends.clear()  # node 1's tables may be gone: rebuild from nothing
        mesh.appliers[1].applied.clear()
        mesh.apply()
