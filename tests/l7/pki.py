"""Certificates for the L7 TLS tests, made with the `openssl` CLI (EC keys: fast), and TLS
clients that report what the server presented."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


class Pki:
    """A test CA in `directory`, and leaf certificates it signs (or self-signed ones)."""

    def __init__(self, directory: str, name: str = "ca"):
        if shutil.which("openssl") is None:
            pytest.skip("the openssl CLI is not installed")
        self.dir, self.name = directory, name
        os.makedirs(directory, exist_ok=True)
        self.cert, self.key = self.path(f"{name}.crt"), self.path(f"{name}.key")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", self.key, "-out", self.cert, "-days", "2", "-subj", f"/CN=Test CA {name}", cwd=directory)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def leaf(self, name: str, host: str, org: str = "ingressmesh-test") -> tuple[str, str]:
        """(certificate, key) for `host`, signed by this CA; the subject's O tells versions apart."""
        cert, key, csr, ext = (self.path(f"{name}.{x}") for x in ("crt", "key", "csr", "ext"))
        with open(ext, "w") as handle:
            handle.write(f"subjectAltName=DNS:{host}\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                 "-out", csr, "-subj", f"/O={org}/CN={host}", cwd=self.dir)
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                 "-days", "2", "-extfile", ext, "-out", cert, cwd=self.dir)
        return cert, key


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
