"""RouteTable + slot assignment → the HAProxy configuration and its route map.

Everything written here is either a constant, a number, or a value that passed a grammar in
grammar.py (host names, safe paths, names, URLs); `check_safe` asserts that once more before
any text is returned, so a bug upstream cannot smuggle a quote or newline into the config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..plan import ACTIVE
from . import acme_render, render_tls
from .routes import DEFAULT_HOST, RouteTable
from .safe import RenderError, check_safe  # noqa: F401 - RenderError is part of this module's API
from .slots import Assignment, slot_name

STATS_FRONTEND = "stats"  # Prometheus scrapes: not clients (runtime.accepted_connections)
NO_ROUTE = "im:no-route"  # never a service backend: those start with "be:"
# A Host header the proxy routes on: a host name (or IPv4 address) with an optional trailing dot
# and port, or a bracketed IPv6 literal.  Anything else ('/', ',', '@', spaces...) would become
# part of the route key (`Host: a.com/app` reached a.com's /app backend, `Host: bank.com/` escaped
# bank.com's ssl_only redirect), so it is answered 400 before any routing or redirect.
VALID_HOST = ("^([a-z0-9_]([a-z0-9_-]*[a-z0-9_])?([.][a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*[.]?"
              "|\\[[0-9a-f:.]+\\])(:[0-9]+)?$")
# The routed host of a valid Host header: its port cut at the LAST ':' followed only by digits (an
# IPv6 literal's own colons sit inside its brackets: `[::1]:80` -> `[::1]`), lower case, no
# trailing dot.
HOST_EXPR = "req.fhdr(host),regsub(':[0-9]+$',''),lower,regsub('[.]$','')"


@dataclass(frozen=True)
class ProxySettings:
    """Where the proxy listens and keeps its files (from the command line)."""
    http_port: int = 80
    bind_address: str = "0.0.0.0"
    stats_port: int = 8405  # HAProxy's Prometheus exporter: /metrics
    admin_socket: str = "/run/ingressmesh-proxy/admin.sock"
    map_file: str = "/run/ingressmesh-proxy/routes.map"
    proxy_id: str = "proxy"
    server_info: str = "ingressmesh"
    hard_stop_after: str = "30m"  # how long an old worker may keep long-lived connections
    maxconn: int = 0  # 0: HAProxy derives it from the file descriptor limit
    https_port: int = 0  # 0: no HTTPS listener (TLS hosts are then refused by name)
    https_redirect_port: int = 0  # the port ssl_only redirects name (the published one); 0: https_port
    secrets_dir: str = "/run/secrets"  # where the Docker secrets the labels name are mounted
    crt_list: str = "/run/ingressmesh-proxy/crt-list"  # set per config generation by the applier
    tls_socket: str = ""  # abstract socket of the TLS-terminating listener; "": derived from admin_socket
    websocket_timeout: str = "24h"  # tunnel timeout on websocket_endpoints (hard_stop_after still bounds reloads)
    cookie_key: str = ""  # seeds sticky cookies' values; the same on every replica (from the cluster token)
    listen_fds: tuple[tuple[int, int], ...] = ()  # (port, fd) the proxy holds open (listeners.py): bind fd@N
    accept_proxy: bool = False  # public binds take a PROXY header (v1/v2) from an L4 balancer in front


def route_key(host: str, path: str) -> str:
    """The map key of a route; requests are looked up as host + path + '/', so '/api' matches
    '/api' and '/api/x' but not '/apix'."""
    return check_safe(host, "host") + check_safe(path.rstrip("/"), "path") + "/"


def render_map(table: RouteTable) -> str:
    """The HTTP route map (passthrough routes are chosen by SNI, not here)."""
    tcp = {b.name for b in table.backends if b.proto == "tcp"}
    lines = [f"{route_key(r.host, r.path)} {check_safe(r.backend, 'backend')}"
             for r in table.routes if r.host != DEFAULT_HOST and r.backend not in tcp]
    return "".join(line + "\n" for line in lines)


def map_commands(map_file: str, old: dict, new: dict) -> list[str]:
    """Runtime commands turning map entries `old` into `new` (HAProxy's map_beg is a prefix tree:
    the longest key wins whatever the order, so entries can be added anywhere)."""
    path = check_safe(map_file, "map file")
    commands = [f"del map {path} {check_safe(key, 'map key')}" for key in sorted(old.keys() - new.keys())]
    for key, backend in sorted(new.items()):
        if key not in old:
            commands.append(f"add map {path} {check_safe(key, 'map key')} {check_safe(backend, 'backend')}")
        elif old[key] != backend:
            commands.append(f"set map {path} {check_safe(key, 'map key')} {check_safe(backend, 'backend')}")
    return commands


def _global(s: ProxySettings) -> list[str]:
    return [
        "global",
        "    master-worker",
        "    mworker-max-reloads 50",
        f"    hard-stop-after {check_safe(s.hard_stop_after, 'hard_stop_after')}",
        f"    stats socket {check_safe(s.admin_socket, 'admin socket')} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        *([f"    maxconn {int(s.maxconn)}"] if s.maxconn else []),
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout tunnel 1h",
        "    retries 2",
        "    retry-on conn-failure",
        "    option redispatch 1",
        "",
    ]


def request_rules(table: RouteTable, s: ProxySettings, proto: str) -> list[str]:
    """The HTTP rules shared by the plain and the TLS-terminating frontend."""
    default = table.default_backend or NO_ROUTE
    lines = [
        # On a reload the old worker would close idle keep-alive connections at once, racing a
        # request the client may be sending on one; this way each closes after its next response.
        "    option idle-close-on-response",
        "    http-request del-header X-Request-Id",  # ours replaces any the client sent
        # Unique without per-request address formatting (the costliest part of a request here):
        # this proxy's id, the worker's pid, the second and the worker's request counter.
        f"    unique-id-format {check_safe(s.proxy_id, 'proxy id')}-%{{+X}}o%pid-%Ts-%rt",
        "    unique-id-header X-Request-Id",
        "    http-request del-header X-Forwarded-For",
        "    option forwardfor",
        "    http-request set-header X-Real-IP %[src]",
        f"    http-request set-header X-Forwarded-Proto {proto}",
        # Host checks (README "Host header"): one valid Host, and HTTP/1.1 must send one (RFC 9112
        # 3.2); an HTTP/1.0 request without one is routed like an unknown host.  The whole header
        # (fhdr: no splitting at commas) is checked; a trailing dot names the same host.
        "    http-request return status 400 content-type text/plain string \"bad Host header\\n\" "
        "if { req.hdr_cnt(host) gt 1 } || { req.hdr_cnt(host) eq 0 } HTTP_1.1 || "
        f"{{ req.hdr_cnt(host) eq 1 }} !{{ req.fhdr(host) -m reg -i '{VALID_HOST}' }}",
        f"    http-request set-var(txn.host) {HOST_EXPR}",
        "    http-request set-var-fmt(txn.route) %[var(txn.host)]%[path]/",
    ]
    if proto == "http":
        lines += acme_render.challenge_rules(table)  # before any redirect: the ACME server asks here
        lines += render_tls.https_redirects(table, s)
    # A redirect answers only requests that came in on its source's scheme: `http://a.com,https://a.com`
    # in the HTTPS frontend too would answer its own target, forever.
    for redirect in (r for r in table.redirects if r.scheme == proto):
        lines.append(f"    http-request redirect prefix {check_safe(redirect.target, 'redirect target')} code 302 "
                     f"if {{ var(txn.host) -m str {check_safe(redirect.source_host, 'redirect host')} }}")
    lines += [
        "    http-response set-header X-Request-Id %[unique-id]",
        f"    http-response set-header X-Proxy-Id {check_safe(s.proxy_id, 'proxy id')}",
        f"    http-response set-header X-Server-Info {check_safe(s.server_info, 'server info')}",
        f"    use_backend %[var(txn.route),map_beg({check_safe(s.map_file, 'map file')},{default})]",
        f"    default_backend {default}",
        "",
    ]
    return lines


def _frontend(table: RouteTable, s: ProxySettings) -> list[str]:
    return ["frontend http", f"    bind {render_tls.public_bind(s, s.http_port)}",
            *request_rules(table, s, "http")]


def _backends(table: RouteTable, slots: Assignment, s: ProxySettings) -> list[str]:
    lines = []
    for backend in table.backends:
        lines += [f"backend {check_safe(backend.name, 'backend')}", *render_tls.backend_options(backend, s)]
        if backend.strip_prefix:
            lines.append(f"    http-request replace-path '^{re.escape(check_safe(backend.strip_prefix, 'path'))}/?(.*)$' '/\\1'")
        if backend.proto == "http":
            lines += ["    http-response set-header X-Upstream-Addr %[bc_dst]:%[bc_dst_port]",
                      "    http-response set-header X-Upstream-Response-Time %Tr"]
        for index, server in enumerate(slots[backend.name]):
            name = slot_name(index)
            # Every slot carries the backend's flags: the runtime API moves a task into any slot.
            extra = render_tls.server_options(backend)
            if server is None:
                lines.append(f"    server {name} 127.0.0.1:1 disabled weight 0{extra}")
            else:
                weight = 1 if server.state == ACTIVE else 0
                lines.append(f"    server {name} {check_safe(server.address, 'address')}:{int(server.port)} "
                             f"weight {weight}{extra}")
        lines.append("")
    lines += [f"backend {NO_ROUTE}",
              # Interlock's answer for a host nobody serves (a route whose tasks are all gone is 503).
              '    http-request return status 404 content-type text/plain string "no route for this host\\n"', ""]
    return lines


def _stats(s: ProxySettings) -> list[str]:
    return [f"frontend {STATS_FRONTEND}",
            f"    bind {render_tls.bind_target(s, s.stats_port)}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            '    http-request return status 200 content-type text/plain string "ok\\n" if { path /healthz }',
            ""]


def render_config(table: RouteTable, slots: Assignment, settings: ProxySettings) -> str:
    return "\n".join(_global(settings) + _frontend(table, settings)
                     + render_tls.https_frontends(table, settings, request_rules(table, settings, "https"))
                     + _stats(settings) + _backends(table, slots, settings))
