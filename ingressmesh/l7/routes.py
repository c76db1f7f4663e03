"""The L7 planner: a pure function from (Cluster, proxy scope, options) to a RouteTable.

No I/O, no clock (options.now is given).  Same input, equal output: routes, backends and
servers come out sorted, so the caller can compare tables to tell what changed.

Rules (README "L7 routing"):
- a route is (host, context root); requests take the longest context root of their host;
- several services claiming one route share it: all their eligible tasks sit in one backend
  with equal weight, so traffic splits in proportion to healthy replicas (Interlock's canary);
- seniority: the service created first (Docker's CreatedAt; ties, and snapshots without it, by
  name) is the senior claimant, so a newcomer can never take a host or route from an incumbent;
- claimants of one route must agree on how it behaves (context_root_rewrite, backend_mode,
  TLS to the tasks, sticky cookie, ip_hash, websocket endpoints): the senior one keeps the
  route, the others are refused for it by name;
- TLS and redirects are chosen per host (SNI and a redirect happen before any path is known):
  every service claiming a host, whatever its context root, must name the same certificate and
  key, ssl_only, ssl_passthrough and redirects of that host; the senior claimant owns the host,
  the others are refused for it by name;
- the same holds for `default_backend`, which serves hosts nobody claims (otherwise 404);
- a redirect is kept only for a host its service serves; other redirects are refused by name;
- com.docker.lb.network must be a network the service is on (VIP or task address); under
  `docker stack deploy` an unprefixed name means the service's own stack's network.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Optional

from .. import model
from ..plan import ACTIVE, PlanOptions, ip_sort_key, panic_warning, serving_states
from . import agreement, labels
from .grammar import LabelError

DEFAULT_HOST = ""  # the host of the default backend's route


@dataclass(frozen=True)
class ProxyScope:
    """Which services one proxy serves: its service cluster, and (when known) the networks its
    own task is attached to, so a service on a network the proxy has not joined yet waits."""
    service_cluster: str = ""
    networks: Optional[frozenset[str]] = None  # network ids; None: do not check
    proxy_service: str = ""  # the proxy's own service name (never routed to)


@dataclass(frozen=True)
class Server:
    service: str
    task_id: str  # "vip" for a service reached through its VIP
    node: str
    address: str
    port: int
    state: str  # ACTIVE or DRAINING
    health: str = "none"


@dataclass(frozen=True)
class Backend:
    name: str
    services: tuple[str, ...]
    mode: str = "task"
    strip_prefix: str = ""  # context root removed before the request reaches the app
    servers: tuple[Server, ...] = ()
    proto: str = "http"  # "tcp": TLS passed through to the tasks, routed by SNI
    balance: str = "roundrobin"  # "source": ip_hash
    cookie: str = ""  # the app's session cookie (sticky sessions)
    websocket_paths: tuple[str, ...] = ()
    ssl: str = ""  # TLS to the tasks: "" (plain), "none" or "required" (verified against the CA)
    ca_secret: str = ""
    ca_file: str = ""  # the checked CA bundle in the proxy's work dir (certs.resolve fills it in)
    panic: bool = False  # no healthy task: the running ones serve (plan.serving_states)
    proxy_protocol: bool = False  # send-proxy-v2 to the tasks (io.ingressmesh.lb.proxy_protocol)

    def shape(self) -> tuple:
        """Everything about the backend except its servers (a change here needs a reload)."""
        return (self.name, self.services, self.mode, self.strip_prefix, self.proto, self.balance, self.cookie,
                self.websocket_paths, self.ssl, self.ca_secret, self.ca_file, self.proxy_protocol)


@dataclass(frozen=True)
class TlsHost:
    """How one host name is served on the HTTPS port."""
    host: str
    services: tuple[str, ...]
    cert: str = ""  # Docker secret names; "" for passthrough
    key: str = ""
    only: bool = False  # plain HTTP answers a redirect to HTTPS
    passthrough: bool = False
    pem: str = ""  # the checked certificate + key in the proxy's work dir (certs.resolve fills it in)
    acme: bool = False  # an issued certificate (acme_routes.py): until its secrets are here, plain HTTP


@dataclass(frozen=True)
class Route:
    host: str  # DEFAULT_HOST for the default backend
    path: str
    backend: str


@dataclass(frozen=True)
class Refusal:
    service: str
    reason: str


@dataclass(frozen=True)
class RouteTable:
    routes: tuple[Route, ...] = ()
    backends: tuple[Backend, ...] = ()
    redirects: tuple[labels.Redirect, ...] = ()
    refused: tuple[Refusal, ...] = ()
    notes: tuple[str, ...] = ()
    tls_hosts: tuple[TlsHost, ...] = ()
    challenges: tuple = ()  # acme_routes.Challenge: HTTP-01 answers on the HTTP port

    def backend(self, name: str) -> Optional[Backend]:
        return next((b for b in self.backends if b.name == name), None)

    def shape(self) -> tuple:
        """What only a new config can change: redirects, the default backend, TLS per host and
        every backend's shape.  Routes to existing backends are map entries, changed at runtime."""
        return (self.redirects, self.default_backend, tuple(b.shape() for b in self.backends), self.tls_hosts,
                self.challenges)

    def map_entries(self) -> dict[str, str]:
        """The route map: key (host + context root + '/') -> backend, default route and TLS
        passthrough routes (routed by SNI, never by the HTTP map) excluded."""
        tcp = {b.name for b in self.backends if b.proto == "tcp"}
        return {r.host + r.path.rstrip("/") + "/": r.backend for r in self.routes
                if r.host != DEFAULT_HOST and r.backend not in tcp}

    @property
    def default_backend(self) -> Optional[str]:
        return next((r.backend for r in self.routes if r.host == DEFAULT_HOST), None)


@dataclass(frozen=True)
class _Claim:
    service: model.Service
    request: labels.RouteRequest
    network: model.Network


STACK_NAMESPACE = "com.docker.stack.namespace"  # set by `docker stack deploy` on what it creates


def seniority(service: model.Service) -> tuple[float, str]:
    """Who came first: an incumbent keeps its host and routes whatever a newcomer is named."""
    return service.created, service.name


def labelled_network(service: model.Service, name: str, cluster: model.Cluster) -> Optional[model.Network]:
    """The network com.docker.lb.network names: the exact name, else (under `docker stack deploy`,
    which prefixes the networks it creates, so Interlock's stack examples name `demo-network` for
    `demo_demo-network`) the service's own stack's network of that name."""
    exact = next((n for n in cluster.networks if n.name == name), None)
    if exact is not None:
        return exact
    stack = dict(service.labels).get(STACK_NAMESPACE, "")
    return next((n for n in cluster.networks if stack and n.name == f"{stack}_{name}"), None)


def network_of(service: model.Service, request: labels.RouteRequest, cluster: model.Cluster,
                tasks) -> model.Network:
    """The network the proxy reaches the service on: the label's (which the service must be on:
    the proxies are attached to it, so a label must not pull them onto someone else's network),
    or the only one it is on."""
    by_id = {n.id: n for n in cluster.networks}
    if request.network is not None:
        found = labelled_network(service, request.network, cluster)
        if found is None or found.ingress:
            raise LabelError(labels.PREFIX + "network", request.network, "no such overlay network")
        if not service.vip_on(found.id) and not any(t.address_on(found.id) for t in tasks):
            raise LabelError(labels.PREFIX + "network", request.network,
                             f"the service has no VIP or task address on network {found.name}: "
                             "the proxies only join networks of the services they route to")
        return found
    ids = {v.network_id for v in service.vips} | {a.network_id for t in tasks for a in t.addresses}
    candidates = sorted(by_id[i].name for i in ids if i in by_id and not by_id[i].ingress)
    if len(candidates) != 1:
        reason = ("the service is on no overlay network" if not candidates else
                  f"the service is on several networks ({', '.join(candidates)}): set com.docker.lb.network")
        raise LabelError(labels.PREFIX + "network", "", reason)
    return next(n for n in cluster.networks if n.name == candidates[0])


def _servers(claim: _Claim, tasks, node_of, states: dict) -> list[Server]:
    service, request, network = claim.service, claim.request, claim.network
    found = []
    for task in tasks:
        node = node_of.get(task.node_id)
        state = states[task.id]
        address = task.address_on(network.id)
        if state and address:
            found.append(Server(service.name, task.id, node.hostname if node else task.node_id,
                                address, request.port, state, task.health))
    if request.backend_mode == "vip":
        vip = service.vip_on(network.id)
        if not vip or not any(s.state == ACTIVE for s in found):
            return []
        return [Server(service.name, "vip", "", vip, request.port, ACTIVE)]
    return found


def backend_name(services: tuple[str, ...], mode: str, strip: str) -> str:
    """Stable, safe and collision-free: parts are joined with ':', which HAProxy allows in
    names and Docker never allows in a service name; long canary sets get a hash."""
    text = ":".join(services)
    if len(text) > 60:
        text = services[0][:40] + ":" + hashlib.sha1("\0".join(services).encode()).hexdigest()[:12]
    suffix = "" if not strip else ":strip-" + hashlib.sha1(strip.encode()).hexdigest()[:8]
    return f"be:{text}{':vip' if mode == 'vip' else ''}{suffix}"


def plan_routes(cluster: model.Cluster, scope: ProxyScope = ProxyScope(),
                options: PlanOptions = PlanOptions()) -> RouteTable:
    tasks_of: dict[str, list[model.Task]] = {}
    for task in cluster.tasks:
        tasks_of.setdefault(task.service_id, []).append(task)
    node_of = {n.id: n for n in cluster.nodes}
    node_states = {n.id: n.state for n in cluster.nodes}
    refused, notes = [], []
    claims: dict[tuple[str, str], list[_Claim]] = {}
    for service in sorted(cluster.services, key=seniority):
        if service.name == scope.proxy_service or not labels.wants_routing(service.labels):
            continue
        tasks = tasks_of.get(service.id, ())
        try:
            request = labels.parse(service.labels)
            if request.service_cluster != scope.service_cluster:
                continue
            network = network_of(service, request, cluster, tasks)
        except LabelError as err:
            refused.append(Refusal(service.name, str(err)))
            continue
        if scope.networks is not None and network.id not in scope.networks:
            notes.append(f"service {service.name}: waiting for the proxy to join network {network.name}")
            continue
        notes += [f"service {service.name}: {note}" for note in request.notes]
        if request.network is not None and request.network != network.name:
            notes.append(f"service {service.name}: com.docker.lb.network={request.network} is the stack's "
                         f"network {network.name} (no network is named {request.network})")
        claim = _Claim(service, request, network)
        keys = [(h, request.context_root) for h in request.hosts]
        if request.default_backend:
            keys.append((DEFAULT_HOST, "/"))
        for key in keys:
            claims.setdefault(key, []).append(claim)
    host_owner: dict[str, _Claim] = {}  # the senior claimant of each host decides its TLS and redirects
    for (host, _), claimants in sorted(claims.items()):
        if host not in host_owner or seniority(claimants[0].service) < seniority(host_owner[host].service):
            host_owner[host] = claimants[0]
    routes, backends, said = [], {}, set()
    for (host, path), claimants in sorted(claims.items()):
        owner = host_owner[host]
        sharing = []
        for claim in claimants:
            differs = agreement.differences(claim.request, owner.request, host) if host != DEFAULT_HOST else ""
            if differs:
                if (claim.service.name, host) not in said:
                    said.add((claim.service.name, host))
                    refused.append(Refusal(claim.service.name, f"host {host}: {differs}: TLS and redirects are "
                                           f"chosen per host; {owner.service.name} keeps the host"))
                continue
            differs = agreement.differences(claim.request, sharing[0].request) if sharing else ""
            if differs:
                refused.append(Refusal(claim.service.name, f"route {host or '(default)'}{path}: {differs}; "
                                       f"{sharing[0].service.name} keeps the route"))
                continue
            sharing.append(claim)
        if not sharing:  # every claimant was refused for the host
            continue
        first = sharing[0].request
        strip = path if first.rewrite and path != "/" else ""
        services = tuple(sorted(c.service.name for c in sharing))  # by name: stable backend names
        name = backend_name(services, first.backend_mode, strip)
        if name not in backends:
            # Panic mode is decided per backend (all its services' tasks together), as Envoy does per
            # cluster: a canary whose every task fails its check gets nothing while the stable one is healthy.
            group = [t for c in sharing for t in tasks_of.get(c.service.id, ())]
            states, panic = serving_states(group, node_states, options)
            if panic:
                notes.append(panic_warning(f"backend {name} ({', '.join(services)})", group, states))
            servers = [s for c in sharing for s in _servers(c, tasks_of.get(c.service.id, ()), node_of, states)]
            servers.sort(key=lambda s: (ip_sort_key(s.address), s.port, s.task_id))
            backends[name] = replace(_backend(name, services, first, strip, tuple(servers)), panic=panic)
        routes.append(Route(host, path, name))
    # Longest context root first within a host: the renderer keeps this order.
    routes.sort(key=lambda r: (r.host, -len(r.path), r.path))
    from . import acme_routes  # it builds on this module's types
    return acme_routes.attach(RouteTable(
        routes=tuple(routes), backends=tuple(sorted(backends.values(), key=lambda b: b.name)),
        redirects=_redirects(claims, host_owner, routes, backends, refused),
        refused=tuple(refused), notes=tuple(sorted(set(notes))),
        tls_hosts=_tls_hosts(routes, backends, host_owner)), cluster, scope.proxy_service)


def _redirects(claims: dict, owners: dict[str, _Claim], routes: list[Route], backends: dict[str, Backend],
               refused: list[Refusal]) -> tuple[labels.Redirect, ...]:
    """A redirect answers every request for its host (on its source scheme's port) before any
    routing, so it is the host's behaviour: it is kept only when its service serves the host (and
    every service serving a host agrees on its redirects: agreement.py); any other redirect is a
    claim on someone else's host, refused by name (appended to `refused`).  The senior service's
    copy is the one kept, so it goes only when that service does."""
    serving = {(r.host, s) for r in routes for s in backends[r.backend].services}
    kept: dict[tuple[str, str], labels.Redirect] = {}  # (host, source scheme) -> the redirect
    for claim in sorted({c.service.name: c for cs in claims.values() for c in cs}.values(),
                        key=lambda c: seniority(c.service)):
        service = claim.service.name
        for redirect in claim.request.redirects:
            host = redirect.source_host
            if (host, service) in serving:
                kept.setdefault((host, redirect.scheme), replace(redirect, service=service))
                continue
            owner = owners[host].service.name if host in owners else ""
            refused.append(Refusal(service, f"redirect {host} -> {redirect.target}: the service does not serve "
                                   f"host {host}" + (f" ({owner} keeps it)" if owner else "")))
    return tuple(r for _, r in sorted(kept.items()))


def _backend(name: str, services: tuple[str, ...], request: labels.RouteRequest, strip: str,
             servers: tuple[Server, ...]) -> Backend:
    tls = request.tls
    return Backend(name, services, request.backend_mode, strip, servers,
                   proto="tcp" if tls.passthrough else "http", balance="source" if request.ip_hash else "roundrobin",
                   cookie=request.sticky_cookie, websocket_paths=request.websocket_endpoints,
                   ssl=tls.verify if tls.backend else "", ca_secret=tls.ca, proxy_protocol=request.proxy_protocol)


def _tls_hosts(routes: list[Route], backends: dict[str, Backend], owners: dict[str, _Claim]) -> tuple[TlsHost, ...]:
    """The routes are grouped by host in one pass: scanning them once per TLS host made a
    snapshot of 8,000 TLS hosts cost seconds in every proxy (issue 20)."""
    services_of: dict[str, set[str]] = {}
    for route in routes:
        if route.host != DEFAULT_HOST:
            services_of.setdefault(route.host, set()).update(backends[route.backend].services)
    found = []
    for host, services in sorted(services_of.items()):
        tls = owners[host].request.tls
        if tls.terminated or tls.only or tls.passthrough:
            found.append(TlsHost(host, tuple(sorted(services)), tls.cert, tls.key, tls.only, tls.passthrough))
    return tuple(found)


def without_services(table: RouteTable, refusals: list[Refusal]) -> RouteTable:
    """The table with every route, backend, redirect and TLS host of the refused services
    removed (they share nothing with anyone who stays), and the refusals added."""
    gone = {r.service for r in refusals}
    if not gone:
        return table
    dropped = {b.name for b in table.backends if gone & set(b.services)}
    routes = tuple(r for r in table.routes if r.backend not in dropped)
    hosts = {r.host for r in routes}
    return replace(table, routes=routes, backends=tuple(b for b in table.backends if b.name not in dropped),
                   redirects=tuple(r for r in table.redirects if r.service not in gone and r.source_host in hosts),
                   tls_hosts=tuple(replace(t, services=tuple(s for s in t.services if s not in gone))
                                   for t in table.tls_hosts if t.host in hosts),
                   challenges=tuple(c for c in table.challenges if c.service not in gone),
                   refused=table.refused + tuple(refusals))


def next_change(cluster: model.Cluster, table: RouteTable, options: PlanOptions) -> Optional[float]:
    """When (options.now clock) the earliest draining server's grace ends, so it is dropped on time."""
    draining = {s.task_id for b in table.backends for s in b.servers if s.state != ACTIVE}
    ends = [t.since + options.drain_grace for t in cluster.tasks if t.id in draining]
    return min(ends) if ends else None
