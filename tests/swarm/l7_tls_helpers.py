"""HTTPS and websockets through the lab's proxies from a lab namespace: the certificate served
for a host name, requests over TLS, a websocket opened through a node (bounded, lab addresses
only)."""
from __future__ import annotations

import socket

from ingressmesh.netns import Netns
from ingressmesh.testbed.l7_probe import https_request
from ingressmesh.testbed.websocket import upgrade
from l7_helpers import DEFAULT_PROXY, HTTPS_PORT, replicas, settled_replicas
from swarm_helpers import wait_for


def https_probe(host: str, cafile: str):
    """A LoadGenerator probe: one HTTPS GET; names the certificate version (subject O) served."""
    def probe(netns: str, address: str, port: int) -> str:
        answer = https_request(netns, address, port, host, cafile)
        if answer.status != 200:
            raise OSError(f"HTTPS {answer.status}: {answer.body[:80]!r}")
        return answer.subject.get("organizationName", "")
    return probe


def open_websocket(netns: str, address: str, port: int, host: str, path: str, timeout: float = 10.0) -> socket.socket:
    with Netns.from_ref(netns).entered():
        sock = socket.create_connection((address, port), timeout=timeout)
    try:
        upgrade(sock, host, path)
    except OSError:
        sock.close()
        raise
    return sock


def tls_everywhere(lab, host: str, cafile: str, org: str = "") -> bool:
    """Every node answers 200 over HTTPS for host with host's certificate (of version org)."""
    for n in lab.config.node_numbers:
        answer = https_request(lab.client_netns(), lab.node_address(n), HTTPS_PORT, host, cafile)
        if answer.status != 200 or answer.subject.get("commonName") != host or \
                (org and answer.subject.get("organizationName") != org):
            return False
    return True


def every_replica_serves(lab, host: str, cafile: str, org: str = "") -> bool:
    """Each running proxy replica (both of them, and no third one still rolling), asked directly
    on its HTTPS port, answers 200 for host with host's certificate (of version org)."""
    found = replicas(lab, DEFAULT_PROXY)
    if len(found) != 2:
        return False
    for n, _, ip in found:
        answer = https_request(lab.node_netns(n), ip, 443, host, cafile)
        if answer.status != 200 or answer.subject.get("commonName") != host or \
                (org and answer.subject.get("organizationName") != org):
            return False
    return True


def wait_https(lab, cafile: str, *hosts: str, org: str = "") -> None:
    """Until every proxy replica serves every host over HTTPS, the proxy service has stopped
    rolling, and so every node does too.  A labelled service on a network the proxy tasks have
    not joined makes `l7 deploy` roll the proxy service start-first: until the rollout ends, the
    old tasks cannot reach it (and the L4 mesh still sends them a share of the connections)."""
    wait_for(f"{', '.join(hosts)} over HTTPS on every proxy replica", lambda: all(
        every_replica_serves(lab, host, cafile, org) for host in hosts), timeout=240, interval=1)
    settled_replicas(lab, DEFAULT_PROXY, 2)
    for host in hosts:
        assert tls_everywhere(lab, host, cafile, org)
