"""Certificates for the L7 TLS tests, made with the `openssl` CLI (EC keys: fast), and TLS
clients that report what the server presented."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import time

import pytest


from ingressmesh.testbed.pki import Pki  # noqa: E402,F401 - the CA the tests use


def secret(secrets_dir: str, name: str, source: str) -> str:
    """Copies `source` into the secrets directory as Docker would mount secret `name`."""
    os.makedirs(secrets_dir, exist_ok=True)
    shutil.copyfile(source, os.path.join(secrets_dir, name))
    return name


def client_context(ca: Pki, alpn=("http/1.1",)) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.cert)
    context.check_hostname = False  # the subject is checked by the test itself
    context.set_alpn_protocols(list(alpn))
    return context


def tls_connect(port: int, sni: str, context: ssl.SSLContext, source: str = "127.0.0.1") -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    try:
        return context.wrap_socket(sock, server_hostname=sni)
    except Exception:
        sock.close()
        raise


def subject(tls) -> dict:
    """The presented certificate's subject as {'O': ..., 'CN': ...} (an SSLSocket or SSLObject)."""
    short = {"organizationName": "O", "commonName": "CN"}
    return {short[k]: v for rdn in tls.getpeercert()["subject"] for k, v in rdn if k in short}


def https_get(port: int, host: str, context: ssl.SSLContext, path: str = "/", headers=None):
    """(status, headers, body, subject, alpn) of one request on a new TLS connection with SNI `host`."""
    tls = tls_connect(port, host, context)
    presented, alpn = subject(tls), tls.selected_alpn_protocol()  # before the response may close it
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.sock = tls
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body, presented, alpn
    finally:
        conn.close()


def served_by(body: bytes) -> str:
    return json.loads(body)["backend"]


def split_hello_subject(port: int, sni: str, context: ssl.SSLContext, first: int = 40, pause: float = 0.2) -> dict:
    """The subject presented to a client whose ClientHello arrives in two TCP segments, `pause`
    apart (as large post-quantum hellos do): SNI routing must wait for the whole hello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello_sent = False
        for _ in range(100):
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            data = outgoing.read()
            if data and not hello_sent:
                sock.sendall(data[:first])
                time.sleep(pause)
                sock.sendall(data[first:])
                hello_sent = True
            elif data:
                sock.sendall(data)
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            incoming.write(chunk)
        sock.sendall(outgoing.read())  # the client's Finished: a complete handshake for the server
        return subject(tls)
