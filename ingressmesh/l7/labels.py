"""A service's `com.docker.lb.*` labels → its checked routing request, or an error naming why.

One small parser per label family (grammar.py holds the value checkers).  A service either
parses whole or is refused whole: half a route (hosts without the port, a path without its
rewrite flag) would send requests somewhere the operator did not ask for.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Mapping, Optional

from . import grammar, tls_labels
from .grammar import LabelError
from .tls_labels import TlsRequest

PREFIX = "com.docker.lb."
BACKEND_MODES = ("task", "vip")
# Ours, not Interlock's (com.docker.lb.* has no such label): the proxies send a PROXY v2 header to
# the service's tasks, so an app that speaks it learns the client's address without HTTP headers.
PROXY_PROTOCOL_LABEL = "io.ingressmesh.lb.proxy_protocol"

# Interlock labels this version does not implement yet: reported by name, never ignored silently.

@dataclass(frozen=True)
class Redirect:
    source_host: str
    target: str  # scheme://host[:port][path]: the request's path and query are appended
    service: str = ""  # set by the planner: a refused service's redirects go with it
    scheme: str = "http"  # the source's: the redirect answers only requests that came in this way

    def shown(self) -> str:
        return f"{self.scheme}://{self.source_host},{self.target}"


@dataclass(frozen=True)
class RouteRequest:
    """What one service asks the proxy for, every value checked."""
    hosts: tuple[str, ...] = ()
    port: int = 0
    network: Optional[str] = None
    context_root: str = "/"
    rewrite: bool = False
    redirects: tuple[Redirect, ...] = ()
    backend_mode: str = "task"
    default_backend: bool = False
    service_cluster: str = ""
    tls: TlsRequest = TlsRequest()
    websocket_endpoints: tuple[str, ...] = ()  # paths whose upgrades get the long tunnel timeout
    sticky_cookie: str = ""  # the app's session cookie: requests carrying it stay on one task
    ip_hash: bool = False  # the same client address reaches the same task
    proxy_protocol: bool = False  # a PROXY v2 header opens every connection to the tasks
    notes: tuple[str, ...] = ()  # labels seen but not acted on (named in the proxy's log)


def lb_labels(labels) -> dict[str, str]:
    """The service's `com.docker.lb.*` labels, keyed without the prefix."""
    return {key[len(PREFIX):]: value for key, value in dict(labels).items() if key.startswith(PREFIX)}


def wants_routing(labels) -> bool:
    return bool(lb_labels(labels))


def _hosts(found: Mapping[str, str]) -> tuple[str, ...]:
    value = found.get("hosts")
    return grammar.host_list(PREFIX + "hosts", value) if value is not None else ()


def _redirects(found: Mapping[str, str], hosts: tuple[str, ...]) -> tuple[Redirect, ...]:
    label, value = PREFIX + "redirects", found.get("redirects")
    if value is None:
        return ()
    pairs = [pair for pair in grammar.checked_text(label, value).split(";") if pair.strip()]
    if not pairs or len(pairs) > grammar.MAX_LIST:
        raise LabelError(label, value, f"expected 1 to {grammar.MAX_LIST} 'source,target' pairs separated by ';'")
    redirects: dict[tuple[str, str], Redirect] = {}
    for pair in pairs:
        parts = pair.split(",")
        if len(parts) != 2:
            raise LabelError(label, value, f"{pair.strip()!r} is not a 'source,target' pair")
        scheme, source_host, _ = grammar.url(label, parts[0])
        if source_host not in hosts:
            raise LabelError(label, value, f"source host {source_host!r} is not one of the service's hosts")
        if (scheme, source_host) in redirects:
            raise LabelError(label, value, f"source host {source_host!r} is redirected twice from {scheme}://")
        target_scheme, target_host, target = grammar.url(label, parts[1])
        if (target_scheme, target_host) == (scheme, source_host) and _port_of(target) in ("", _DEFAULT_PORT[scheme]):
            raise LabelError(label, value, f"{pair.strip()!r} redirects {scheme}://{source_host} to itself: "
                             "every request would be redirected again, forever")
        redirects[(scheme, source_host)] = Redirect(source_host, target, scheme=scheme)
    return tuple(redirects.values())


_DEFAULT_PORT = {"http": "80", "https": "443"}


def _port_of(prefix: str) -> str:
    """The port of a checked scheme://host[:port][path] prefix ('' when none is written)."""
    return prefix.split("://", 1)[1].split("/", 1)[0].partition(":")[2]


def _flag(found: Mapping[str, str], key: str) -> bool:
    value = found.get(key)
    return grammar.boolean(PREFIX + key, value) if value is not None else False


def _optional(found: Mapping[str, str], key: str, check, default=None):
    value = found.get(key)
    return check(PREFIX + key, value) if value is not None else default


KNOWN = ("hosts", "port", "network", "context_root", "context_root_rewrite", "redirects",
         "backend_mode", "default_backend", "service_cluster", "websocket_endpoints",
         "sticky_session_cookie", "ip_hash") + tls_labels.KEYS


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, KNOWN, n=1, cutoff=0.75)
    return f" (did you mean {PREFIX}{close[0]}?)" if close else ""


def _tls(found: Mapping[str, str], hosts: tuple[str, ...]) -> TlsRequest:
    tls = tls_labels.parse(found)
    if (tls.terminated or tls.only or tls.passthrough) and not hosts:
        key = next(k for k in ("ssl_cert", "ssl_only", "ssl_passthrough") if k in found)
        raise LabelError(PREFIX + key, found[key], "TLS is chosen per host name: set com.docker.lb.hosts")
    return tls


def _passthrough_fits(request: "RouteRequest", found: Mapping[str, str]) -> "RouteRequest":
    """With ssl_passthrough the proxy never sees HTTP: a label that acts on requests cannot apply."""
    if request.tls.passthrough:
        acting = {"context_root": request.context_root != "/", "context_root_rewrite": request.rewrite,
                  "redirects": bool(request.redirects), "default_backend": request.default_backend,
                  "websocket_endpoints": bool(request.websocket_endpoints),
                  "sticky_session_cookie": bool(request.sticky_cookie)}
        for key in (k for k, acts in acting.items() if acts):
            raise LabelError(PREFIX + key, found[key], "ssl_passthrough routes TLS connections by host name: "
                             "the proxy sees no HTTP request to apply this label to")
    return request


def parse(labels) -> RouteRequest:
    """The service's routing request; raises LabelError naming the first bad label."""
    found = lb_labels(labels)
    for key, value in found.items():
        grammar.checked_text(PREFIX + key, value)
    hosts = _hosts(found)
    default_backend = _flag(found, "default_backend")
    if not hosts and not default_backend:
        raise LabelError(PREFIX + "hosts", found.get("hosts", ""),
                         "a routed service needs com.docker.lb.hosts (or default_backend=true)")
    if "port" not in found:
        raise LabelError(PREFIX + "port", "", "missing: the port the service's tasks listen on")
    notes = [f"label {grammar.shown(PREFIX + key)} is not an Interlock label; ignored{_did_you_mean(key)}"
             for key in sorted(found) if key not in KNOWN]  # shown(): repr, so no forged log lines
    return _passthrough_fits(RouteRequest(
        hosts=hosts,
        port=grammar.port(PREFIX + "port", found["port"]),
        network=_optional(found, "network", grammar.name),
        context_root=_optional(found, "context_root", grammar.path, "/"),
        rewrite=_flag(found, "context_root_rewrite"),
        redirects=_redirects(found, hosts),
        backend_mode=_optional(found, "backend_mode", lambda l, v: grammar.choice(l, v, BACKEND_MODES), "task"),
        default_backend=default_backend,
        service_cluster=_optional(found, "service_cluster", grammar.name, ""),
        tls=_tls(found, hosts),
        websocket_endpoints=_optional(found, "websocket_endpoints", grammar.path_list, ()),
        sticky_cookie=_optional(found, "sticky_session_cookie", grammar.cookie_name, ""),
        ip_hash=_flag(found, "ip_hash"),
        proxy_protocol=_proxy_protocol(labels),
        notes=tuple(notes)), found)


def _proxy_protocol(labels) -> bool:
    value = dict(labels).get(PROXY_PROTOCOL_LABEL)
    return grammar.boolean(PROXY_PROTOCOL_LABEL, value) if value is not None else False
