"""HTTPS and websockets through the lab's proxies from a lab namespace: the certificate served
for a host name, requests over TLS, a websocket opened through a node (bounded, lab addresses
only)."""
from __future__ import annotations

import socket

from ingressmesh.netns import Netns
from ingressmesh.testbed.l7_probe import https_request
from ingressmesh.testbed.websocket import upgrade


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
