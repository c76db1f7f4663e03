"""The routed-host expression of the proxy config (render.HOST_EXPR) in a real HAProxy: an IPv6
Host header keeps its bracketed literal (`[::1]:80` -> `[::1]`, not `[`)."""
from __future__ import annotations

import socket
import subprocess
import time

from ingressmesh.l7.render import HOST_EXPR
from l7_backends import free_port


def _echo_host_config(port: int) -> str:
    return "\n".join([
        "defaults", "    mode http", "    timeout connect 5s", "    timeout client 5s", "    timeout server 5s",
        "frontend f", f"    bind 127.0.0.1:{port}",
        f"    http-request set-var(txn.host) {HOST_EXPR}",
        '    http-request return status 200 content-type text/plain lf-string "<%[var(txn.host)]>"', ""])


def _body(port: int, host: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def test_haproxy_routes_an_ipv6_host_as_its_bracketed_literal(tmp_path, haproxy_binary):
    port = free_port()
    config = tmp_path / "host.cfg"
    config.write_text(_echo_host_config(port))
    process = subprocess.Popen([haproxy_binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "haproxy did not listen within 10 s"
                time.sleep(0.05)
        for header, host in ((b"[::1]", b"[::1]"), (b"[::1]:80", b"[::1]"), (b"[FE80::1]:8080", b"[fe80::1]"),
                             (b"Demo.Local.:80", b"demo.local"), (b"10.0.0.1:80", b"10.0.0.1")):
            assert _body(port, header) == b"<" + host + b">", header
    finally:
        process.kill()
        process.wait(5)
