"""What the ACME lab tests share (test_acme_lab.py with host processes, test_stack_install.py with
the stack): Debian's pebble and its mock DNS in a namespace of the test's own on the lab's bridge,
and the certificate a node's published HTTPS port serves, verified against pebble's root."""
from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess

from ingressmesh.l7 import acme_names
from ingressmesh.l7.acme_swarm import LEASE_HOLDER_LABEL, LEASE_SECRET
from ingressmesh.lab import fabric
from ingressmesh.netns import Netns
from ingressmesh.testbed.pebble import Pebble
from ingressmesh.testbed.pki import Pki

PEBBLE_HOST = 200  # pebble's address on the lab subnet: <subnet>.200


@contextlib.contextmanager
def pebble_on_lab(lab, workdir: str, http_port: int):
    """pebble validating HTTP-01 on `http_port` of node2 (every host name resolves there, so the
    ACME server comes in through the mesh as Let's Encrypt would); the namespace goes after."""
    name, veth = f"{lab.config.prefix}-acme", "vetha"
    address = f"{lab.config.subnet}.{PEBBLE_HOST}"
    bridge = lab.config.bridge_netns_name
    fabric.delete([name])  # a crashed earlier run's
    steps = [["ip", "netns", "add", name],
             ["ip", "link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", veth, "netns", bridge],
             ["ip", "-n", bridge, "link", "set", veth, "master", "br0", "up"],
             ["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0"],
             ["ip", "-n", name, "link", "set", "eth0", "up"], ["ip", "-n", name, "link", "set", "lo", "up"]]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True, timeout=30)
        server = Pebble(f"{workdir}/pebble", Pki(f"{workdir}/pki"), http_port, netns=fabric.netns_path(name),
                        address=address, default_ip=lab.node_address(2))
        try:
            yield server
        finally:
            server.close()
    finally:
        assert fabric.delete([name]) == []  # the veth pair goes with it


def serial(netns: str, address: str, port: int, context: ssl.SSLContext, host: str) -> tuple[int, int]:
    """(HTTP status, certificate serial) of one HTTPS GET for `host`, verified against `context`
    (pebble's root and intermediate, and the host name)."""
    with Netns.from_ref(netns).entered():
        raw = socket.create_connection((address, port), timeout=5)
    with context.wrap_socket(raw, server_hostname=host) as tls:
        number = int(tls.getpeercert()["serialNumber"], 16)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = tls.recv(64).decode("ascii", "replace")
    return int(head.split()[1]), number


def served_through_every_node(lab, port: int, context: ssl.SSLContext, host: str) -> set[int]:
    """The serials every node's published HTTPS port serves for `host`; empty until all verify and answer 200."""
    try:
        answers = [serial(lab.client_netns(), lab.node_address(n), port, context, host) for n in lab.config.node_numbers]
    except (OSError, ssl.SSLError, ValueError, IndexError):
        return set()
    return {number for status, number in answers} if all(status == 200 for status, _ in answers) else set()


def lease_holder(lab) -> str:
    """Who holds the ACME issuer lease ("" when nobody, or when there is none)."""
    shown = lab.docker(1, "secret", "inspect", "-f", "{{json .Spec.Labels}}", LEASE_SECRET, check=False).stdout
    return (json.loads(shown) or {}).get(LEASE_HOLDER_LABEL, "") if shown.strip() else ""


def certificate_versions(lab, host: str) -> list[int]:
    """The certificate versions the ACME secrets hold for `host`: an order placed twice (two
    issuers, or an issuer that forgot what it served) would add a v2."""
    names = lab.docker(1, "secret", "ls", "--filter", f"name={acme_names.PREFIX}", "--format", "{{.Name}}").stdout.split()
    subject = acme_names.host_subject(host)
    return sorted({p.version for p in map(acme_names.parse, names) if p is not None and p.subject == subject})
