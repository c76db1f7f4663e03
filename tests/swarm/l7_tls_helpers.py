"""HTTPS through the lab's proxies from the client namespace: the certificate each node serves
for a host name, and requests over TLS (bounded, lab addresses only)."""
from __future__ import annotations

import socket
import ssl
import time

from ingressmesh.netns import Netns


def tls_get(netns: str, address: str, port: int, host: str, cafile: str, path: str = "/",
            alpn=("http/1.1",), timeout: float = 3.0) -> tuple[dict, str, int, str]:
    """(certificate subject, negotiated ALPN, HTTP status, body) for one HTTPS GET with SNI `host`."""
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False  # the test reads the subject itself
    context.set_alpn_protocols(list(alpn))
    with Netns.from_ref(netns).entered():
        raw = socket.create_connection((address, port), timeout=timeout)
    with context.wrap_socket(raw, server_hostname=host) as tls:
        subject = {k: v for rdn in tls.getpeercert()["subject"] for k, v in rdn}
        protocol = tls.selected_alpn_protocol() or ""
        if protocol == "h2":
            return subject, protocol, 0, ""
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0
    return subject, protocol, status, body.decode(errors="replace")
