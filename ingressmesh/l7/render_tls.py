"""The HTTPS side of the config, and the per-backend options the TLS/session labels ask for.

One public HTTPS port serves two kinds of host.  With passthrough hosts, a TCP frontend reads
the SNI of the ClientHello (no decryption) and hands those connections to their tasks as they
are; every other connection goes, with a PROXY v2 header (the client's address survives), to
an internal abstract-socket listener that terminates TLS with the crt-list (one line per host:
its certificate, picked by SNI; HTTP/2 and HTTP/1.1 by ALPN) and routes with the same map as
plain HTTP.  Without passthrough hosts the public port terminates TLS itself (no extra hop;
the internal listener stays bound, idle, so switching between the two shapes is a seamless
reload like any other).  Certificates live in files named by the crt-list, never in this text.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .routes import Backend, RouteTable
from .safe import RenderError, check_safe

if TYPE_CHECKING:
    from .render import ProxySettings

TERMINATE = "im:tls-terminate"  # never a service backend: those start with "be:"
ALPN = "h2,http/1.1"
CHUNK = 32  # host names per ACL line (HAProxy takes at most 64 words a line)


def tls_socket(s: "ProxySettings") -> str:
    """The internal listener: an abstract socket (no file, handed over on reloads like the
    public ports), named after the admin socket so proxies sharing a network namespace differ."""
    name = s.tls_socket or "ingressmesh-tls-" + hashlib.sha1(s.admin_socket.encode()).hexdigest()[:12]
    return "abns@" + check_safe(name, "tls socket")


def bind_target(s: "ProxySettings", port: int) -> str:
    """What a frontend binds for `port`: the socket the proxy holds open (listeners.py), else
    address:port."""
    fd = dict(s.listen_fds).get(int(port))
    return f"fd@{int(fd)}" if fd is not None else f"{check_safe(s.bind_address, 'bind address')}:{int(port)}"


def _terminated(table: RouteTable):
    for tls in table.tls_hosts:
        if tls.cert and not tls.pem:
            raise RenderError(f"host {tls.host}: its certificate was not resolved (certs.CertStore)")
    return [t for t in table.tls_hosts if t.pem]


def render_crt_list(table: RouteTable) -> str:
    """One line per terminated host: the combined PEM and the SNI it answers.  The first line is
    also the certificate of clients that send no SNI (or one nobody claims)."""
    return "".join(f"{check_safe(t.pem, 'certificate file')} {check_safe(t.host, 'host')}\n"
                   for t in sorted(_terminated(table), key=lambda t: t.host))


def https_redirects(table: RouteTable, s: "ProxySettings") -> list[str]:
    """Plain HTTP for ssl_only and passthrough hosts: 301 to the same host and path on HTTPS."""
    hosts = sorted(t.host for t in table.tls_hosts if t.only or t.passthrough)
    if not hosts or not s.https_port:
        return []
    port = int(s.https_redirect_port or s.https_port)
    where = "" if port == 443 else f":{port}"
    return [f"    http-request redirect location https://%[var(txn.host)]{where}%[pathq] code 301 "
            f"if {{ var(txn.host) -m str {' '.join(check_safe(h, 'host') for h in hosts[i:i + CHUNK])} }}"
            for i in range(0, len(hosts), CHUNK)]


def https_frontends(table: RouteTable, s: "ProxySettings", rules: list[str]) -> list[str]:
    """The public HTTPS listener (and the internal terminating one when passthrough needs it)."""
    if not s.https_port:
        return []
    terminated = _terminated(table)
    passthrough = [t for t in table.tls_hosts if t.passthrough]
    if not (terminated or passthrough):
        return []
    bind = public_bind(s, s.https_port)
    ssl = f"ssl crt-list {check_safe(s.crt_list, 'crt-list')} alpn {ALPN}"
    if not passthrough:
        # The internal listener stays bound here too: when the last passthrough host goes, the
        # old worker may still be handing connections to it, and the new worker inherits it.
        return ["frontend https", f"    bind {bind} {ssl}", f"    bind {tls_socket(s)} accept-proxy {ssl}", *rules]
    backend_of = {r.host: r.backend for r in table.routes}
    lines = ["frontend https", "    mode tcp", f"    bind {bind}",
             "    tcp-request inspect-delay 5s",
             "    tcp-request content accept if { req_ssl_hello_type 1 }"]
    lines += [f"    use_backend {check_safe(backend_of[t.host], 'backend')} if {{ req_ssl_sni -i {check_safe(t.host, 'host')} }}"
              for t in passthrough]
    lines += [f"    default_backend {TERMINATE}", "", f"backend {TERMINATE}", "    mode tcp"]
    if not terminated:
        return lines + [""]  # no server: connections for other names are closed
    return lines + [f"    server terminate {tls_socket(s)} send-proxy-v2", "",
                    "frontend https-terminated", f"    bind {tls_socket(s)} accept-proxy {ssl}", *rules]


def backend_options(backend: Backend, s: "ProxySettings") -> list[str]:
    """Mode, balance algorithm, sticky cookie and websocket timeouts of one backend."""
    lines = ["    mode tcp"] if backend.proto == "tcp" else []
    # Consistent hashing: weights still change at runtime (drain, slots), and a task leaving
    # moves only its own clients.
    lines += ["    balance source", "    hash-type consistent"] if backend.balance == "source" else ["    balance roundrobin"]
    if backend.proto != "http":
        return lines
    if backend.cookie:
        # Dynamic: the value is a keyed hash of the task's address and port, so every replica and
        # every reload (whatever slot the task sits in) names a task the same way.
        lines += [f"    cookie {check_safe(backend.cookie, 'cookie')} prefix nocache dynamic",
                  f"    dynamic-cookie-key {cookie_key(s.cookie_key, backend.name)}"]
    for path in backend.websocket_paths:
        where = "" if path == "/" else f" if {{ path {check_safe(path, 'path')} }} || {{ path_beg {path}/ }}"
        lines.append(f"    http-request set-timeout tunnel {check_safe(s.websocket_timeout, 'websocket timeout')}{where}")
    return lines


def cookie_key(seed: str, backend: str) -> str:
    """A per-backend key for dynamic cookies: hex, the same on every replica with the same seed."""
    return hashlib.sha256(f"ingressmesh-cookie\0{seed}\0{backend}".encode()).hexdigest()[:32]


def public_bind(s: "ProxySettings", port: int) -> str:
    """A client-facing bind: with accept_proxy (an L4 balancer in front that sends PROXY headers)
    every connection must open with one, and its address is the client's from then on."""
    return bind_target(s, port) + (" accept-proxy" if s.accept_proxy else "")


def server_options(backend: Backend) -> str:
    """Flags every slot of the backend carries (PROXY v2 and TLS to the tasks)."""
    extra = " send-proxy-v2" if backend.proxy_protocol else ""
    if backend.ssl == "none":
        extra += " ssl verify none sni var(txn.host)"
    elif backend.ssl == "required":
        if not backend.ca_file:
            raise RenderError(f"backend {backend.name}: its CA bundle was not resolved (certs.CertStore)")
        extra += f" ssl verify required ca-file {check_safe(backend.ca_file, 'CA file')} sni var(txn.host)"
    elif backend.ssl:
        raise RenderError(f"backend {backend.name}: unknown ssl mode {backend.ssl!r}")
    return extra
