"""The Host header through a real HAProxy (issue 19.7, 20.3) and a redirect label aimed at someone
else's host (19.4): what a client controls must not choose another route, skip ssl_only, or be
answered by a redirect its host's owner did not ask for."""
from __future__ import annotations

import json
import socket

from pki import client_context, https_get, secret, served_by
from swarm_real import Swarm, get


def raw(proxy, head: bytes) -> tuple[int, bytes]:
    """(status, body) of one request sent byte for byte (no client library fixing it up)."""
    with socket.create_connection(("127.0.0.1", proxy.settings.http_port), timeout=5) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def test_a_host_with_a_path_or_a_comma_is_400_and_never_picks_a_context_root(proxy, backends):
    swarm = Swarm(backends).service("app", hosts="demo.local").service("ctx", hosts="demo.local", context_root="/app")
    app1, ctx1 = swarm.task("app1", "app"), swarm.task("ctx1", "ctx")
    assert proxy.apply(swarm.table()).how == "start"
    assert served_by(get(proxy, "demo.local")[2]) == app1 and served_by(get(proxy, "demo.local", "/app/x")[2]) == ctx1
    for bad in ("demo.local/app", "demo.local/", "demo.local,other.com", "user@demo.local", "demo.local:80/app",
                "demo..local", "-demo.local", "demo.local:x"):
        status, _, body = get(proxy, bad)
        assert (status, body) == (400, b"bad Host header\n"), bad
    assert raw(proxy, b"GET / HTTP/1.1\r\nHost: demo.local\r\nHost: other.com\r\n\r\n")[0] == 400
    assert raw(proxy, b"GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")[0] == 400  # empty
    # Absolute form: HAProxy itself refuses a Host that differs from the URI's authority.
    assert raw(proxy, b"GET http://demo.local/app HTTP/1.1\r\nHost: other.com\r\nConnection: close\r\n\r\n")[0] == 400
    status, body = raw(proxy, b"GET http://demo.local/app HTTP/1.1\r\nHost: demo.local\r\nConnection: close\r\n\r\n")
    assert status == 200 and served_by(body) == ctx1


def test_a_trailing_dot_is_the_same_host_and_unknown_hosts_get_404(proxy, backends):
    swarm = Swarm(backends).service("app", hosts="demo.local")
    app1 = swarm.task("app1", "app")
    proxy.apply(swarm.table())
    for same in ("demo.local.", "DEMO.Local.:80", "demo.local:8080"):
        status, _, body = get(proxy, same)
        assert status == 200 and served_by(body) == app1, same
    assert get(proxy, "nobody.local")[:3:2] == (404, b"no route for this host\n")
    assert get(proxy, "10.0.0.1:80")[0] == 404 and get(proxy, "[::1]:80")[0] == 404  # addresses are hosts too
    assert get(proxy, "demo.local", "/x")[0] == 200


def test_no_host_is_400_on_http_1_1_and_the_default_backend_on_http_1_0(proxy, backends):
    swarm = Swarm(backends).service("app", hosts="demo.local")
    swarm.task("app1", "app")
    proxy.apply(swarm.table())
    assert raw(proxy, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 400  # RFC 9112 3.2
    assert raw(proxy, b"GET / HTTP/1.0\r\n\r\n")[0] == 404  # no default backend
    swarm.service("fallback", default_backend="true")
    fallback = swarm.task("f1", "fallback")
    assert proxy.apply(swarm.table()).how == "reload"
    status, body = raw(proxy, b"GET / HTTP/1.0\r\n\r\n")
    assert status == 200 and served_by(body) == fallback
    assert served_by(get(proxy, "nobody.local")[2]) == fallback and get(proxy, "demo.local/")[0] == 400


def test_ssl_only_cannot_be_skipped_with_an_odd_host(tls_proxy, backends, pki):
    cert, key = pki.leaf("bank", "bank.example.com", org="bank")
    directory = tls_proxy.settings.secrets_dir
    swarm = Swarm(backends).service("bank", hosts="bank.example.com", ssl_only="true",
                                    ssl_cert=secret(directory, "bank.cert", cert), ssl_key=secret(directory, "bank.key", key))
    bank1 = swarm.task("bank1", "bank")
    assert not tls_proxy.apply(swarm.table()).table.refused
    port = tls_proxy.settings.https_port
    for host in ("bank.example.com", "bank.example.com.", "BANK.example.com.:80"):
        status, headers, _ = get(tls_proxy, host, "/a?b=1")
        assert status == 301 and headers["location"] == f"https://bank.example.com:{port}/a?b=1", host
    for bypass in ("bank.example.com/", "bank.example.com/a", "bank.example.com:443/"):
        assert get(tls_proxy, bypass)[0] == 400, bypass
    assert served_by(https_get(port, "bank.example.com", client_context(pki))[2]) == bank1


def test_a_redirect_on_a_host_owned_by_another_service_is_not_served(tls_proxy, backends, pki):
    """The issue's zzz: refused for bank.example.com (different TLS), its redirect of that host to
    evil.example.net must answer neither on HTTP nor on HTTPS; its own host still works."""
    cert, key = pki.leaf("bank", "bank.example.com", org="bank")
    directory = tls_proxy.settings.secrets_dir
    swarm = Swarm(backends).service("bank", hosts="bank.example.com", ssl_cert=secret(directory, "bank.cert", cert),
                                    ssl_key=secret(directory, "bank.key", key))
    swarm.service("zzz", hosts="bank.example.com,zzz.example.com",
                  redirects="https://bank.example.com,https://evil.example.net")
    bank1, zzz1 = swarm.task("bank1", "bank"), swarm.task("zzz1", "zzz")
    table = tls_proxy.apply(swarm.table()).table
    assert {r.service for r in table.refused} == {"zzz"}
    assert any("redirect bank.example.com -> https://evil.example.net" in r.reason for r in table.refused)
    status, headers, body = get(tls_proxy, "bank.example.com")
    assert status == 200 and served_by(body) == bank1 and "location" not in headers
    status, headers, body, _, _ = https_get(tls_proxy.settings.https_port, "bank.example.com", client_context(pki))
    assert status == 200 and served_by(body) == bank1 and "location" not in headers
    assert served_by(get(tls_proxy, "zzz.example.com")[2]) == zzz1
    with open(tls_proxy.haproxy.files.config) as handle:
        assert "evil.example.net" not in handle.read()
    assert json.loads(get(tls_proxy, "zzz.example.com")[2])["headers"]["host"] == "zzz.example.com"
