"""The planner's ACME step: what the issuer published on the proxy service becomes part of the
RouteTable every proxy replica renders.

The issuer's labels are trusted only on the proxy's own service (`l7 deploy` writes them; users'
services cannot), and used only for hosts owned by a service asking for ACME
(`io.ingressmesh.lb.acme=true`): it serves them and is their senior claimant (a canary shares a
host, it does not own it).
- HTTP-01 key authorizations (`io.ingressmesh.lb.acme.http01.<host>`) are answered for that host;
- ACME certificates (`io.ingressmesh.lb.acme.certs`) become TLS hosts, marked `acme`, for a host
  that has no TLS of its own (Interlock's ssl_cert/ssl_key win).
Pure: no I/O, same input, equal output.  A malformed issuer label is a note; the routes stay.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .. import model
from . import acme_labels, acme_names
from .routes import RouteTable, TlsHost, seniority


@dataclass(frozen=True, order=True)
class Challenge:
    """`/.well-known/acme-challenge/<token>` on `hosts` answers `key_authorization`."""
    token: str
    key_authorization: str
    hosts: tuple[str, ...]
    service: str


def attach(table: RouteTable, cluster: model.Cluster, proxy_service: str) -> RouteTable:
    """`table` with the challenges and ACME TLS hosts the proxy service `proxy_service` carries."""
    proxy = next((s for s in cluster.services if s.name == proxy_service), None) if proxy_service else None
    if proxy is None or not any(acme_labels.wants_acme(s.labels) for s in cluster.services):
        return table  # the common case costs one look at each service's labels
    versions, answers, problems = acme_labels.published(proxy.labels)
    notes = [f"proxy service {proxy.name}: {problem}; ignored" for problem in problems]
    backends = {b.name: b for b in table.backends}
    serves: dict[str, set[str]] = {}  # service -> hosts it serves
    for route in table.routes:
        backend = backends.get(route.backend)
        if route.host and backend is not None and backend.proto == "http":
            for service in backend.services:
                serves.setdefault(service, set()).add(route.host)
    owners: dict[str, set[str]] = {}
    for service, hosts in serves.items():
        for host in hosts:
            owners.setdefault(host, set()).add(service)
    by_name = {s.name: s for s in cluster.services}
    senior = {host: min(names, key=lambda n: seniority(by_name[n])) for host, names in owners.items()}
    challenges, added = [], {}
    have_tls = {t.host for t in table.tls_hosts}
    for service in sorted(cluster.services, key=lambda s: s.name):
        found = dict(service.labels)
        hosts = {h for h in serves.get(service.name, ()) if senior[h] == service.name}  # canaries share, not own
        if not hosts or not acme_labels.wants_acme(found):
            continue
        challenges += [Challenge(token, answer, (host,), service.name)
                       for host in sorted(hosts) for token, answer in answers.get(host, {}).items()]
        for host, version in sorted(versions.items()):
            if host in hosts and host not in have_tls and host not in added:
                cert, key = acme_names.cert_secrets(host, version)
                added[host] = TlsHost(host, tuple(sorted(owners[host])), cert, key, acme=True)
    if not (challenges or added or notes):
        return table
    return replace(table, challenges=tuple(sorted(challenges)),
                   tls_hosts=tuple(sorted(table.tls_hosts + tuple(added.values()), key=lambda t: t.host)),
                   notes=tuple(sorted(set(table.notes) | set(notes))))
