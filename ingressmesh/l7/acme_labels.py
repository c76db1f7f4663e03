"""The ACME labels: which services ask for an automatic certificate, and what the issuer
publishes back on them for the proxies.

- `io.ingressmesh.lb.acme=true` (the operator's): a certificate for every `com.docker.lb.hosts`
  host; Interlock's `ssl_cert`/`ssl_key` win when both are set, `ssl_passthrough` needs none.
- `io.ingressmesh.lb.acme.certs=host:version,...` (the issuer's): which certificate version each
  host serves (secret names: acme_names.py).
- `io.ingressmesh.lb.acme.http01.<host>=token.thumbprint,...` (the issuer's): HTTP-01 key
  authorizations every proxy answers for that host while an order is validated.
The issuer's labels ride on the **proxy service** (which `l7 deploy` owns; a label change rolls
no task), never on users' services: the planner trusts them only there, and they reach every
proxy replica the way routes do (the snapshot).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from . import acme_names, grammar, labels
from .grammar import LabelError

ACME = "io.ingressmesh.lb.acme"
CERTS = "io.ingressmesh.lb.acme.certs"
HTTP01 = "io.ingressmesh.lb.acme.http01"
MAX_ITEMS = 100
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_KEY_AUTH = re.compile(r"^([A-Za-z0-9_-]{16,128})\.([A-Za-z0-9_-]{43})$")  # token . SHA-256 thumbprint


@dataclass(frozen=True)
class AcmeRequest:
    """A service that wants certificates: its hosts, or why it cannot have them."""
    service: str
    hosts: tuple[str, ...] = ()
    reason: str = ""  # non-empty: refused (named in the issuer's log)


def wants_acme(service_labels: Mapping[str, str]) -> bool:
    value = dict(service_labels).get(ACME)
    return value is not None and value.strip().lower() not in ("false", "0", "no")


def request_of(name: str, service_labels: Mapping[str, str]) -> AcmeRequest:
    """What the service asks the issuer for (call only when wants_acme)."""
    found = dict(service_labels)
    try:
        grammar.boolean(ACME, found[ACME])
        route = labels.parse(found)
    except LabelError as err:
        return AcmeRequest(name, reason=str(err))
    if route.tls.cert:
        return AcmeRequest(name, reason=f"{ACME}: the service names its own certificate "
                           "(com.docker.lb.ssl_cert/ssl_key win): nothing to issue")
    if route.tls.passthrough:
        return AcmeRequest(name, reason=f"{ACME}: com.docker.lb.ssl_passthrough: the app terminates TLS itself")
    if not route.hosts:
        return AcmeRequest(name, reason=f"{ACME}: needs com.docker.lb.hosts (the names to certify)")
    wildcard = [h for h in route.hosts if "*" in h]
    if wildcard:
        return AcmeRequest(name, reason=f"{ACME}: {wildcard[0]}: wildcards need DNS-01, which is not supported")
    return AcmeRequest(name, hosts=route.hosts)


def requests(services, service_cluster: str = "") -> list[AcmeRequest]:
    """Every ACME request of the cluster's services (model.Service) routed by the proxies of
    `service_cluster`, by service name."""
    found = []
    for service in services:
        if wants_acme(service.labels):
            try:
                if labels.parse(service.labels).service_cluster != service_cluster:
                    continue
            except LabelError:
                pass  # request_of names it
            found.append(request_of(service.name, service.labels))
    return sorted(found, key=lambda r: r.service)


def _items(label: str, value: str) -> list[str]:
    items = [item.strip() for item in grammar.checked_text(label, value).split(",") if item.strip()]
    if len(items) > MAX_ITEMS:
        raise LabelError(label, value, f"more than {MAX_ITEMS} entries")
    return items


def parse_certs(value: str) -> dict[str, int]:
    """`host:version,...` -> {host: version}; raises LabelError."""
    found = {}
    for item in _items(CERTS, value):
        host, _, version = item.rpartition(":")
        if not version.isdigit() or not 0 < int(version) < 10 ** 9:
            raise LabelError(CERTS, value, f"{item!r} is not host:version")
        found[grammar.host_list(CERTS, host)[0]] = int(version)
    return found


def format_certs(versions: Mapping[str, int]) -> str:
    return ",".join(f"{host}:{version}" for host, version in sorted(versions.items()))


def parse_http01(value: str) -> dict[str, str]:
    """`token.thumbprint,...` -> {token: key authorization}; raises LabelError."""
    found = {}
    for item in _items(HTTP01, value):
        match = _KEY_AUTH.fullmatch(item)
        if not match:
            raise LabelError(HTTP01, value, f"{item!r} is not an HTTP-01 key authorization (token.thumbprint)")
        found[match.group(1)] = item
    return found


def format_http01(key_authorizations) -> str:
    return ",".join(sorted(key_authorizations))


def valid_token(token: str) -> bool:
    return bool(_TOKEN.fullmatch(token))


def http01_label(host: str) -> str:
    return f"{HTTP01}.{host}"


def issuer_labels(proxy_labels: Mapping[str, str]) -> dict[str, str]:
    """The issuer's labels among a proxy service's labels (l7 deploy keeps them in its spec)."""
    return {k: v for k, v in dict(proxy_labels).items() if k == CERTS or k.startswith(HTTP01 + ".")}


def published(proxy_labels: Mapping[str, str]) -> tuple[dict[str, int], dict[str, dict[str, str]], list[str]]:
    """(host -> certificate version, host -> {token: key authorization}, problems) from the
    proxy service's labels; a malformed label is a problem and counts as absent."""
    found, problems, answers = dict(proxy_labels), [], {}
    try:
        versions = parse_certs(found.get(CERTS, ""))
    except LabelError as err:
        versions = {}
        problems.append(str(err))
    for key, value in sorted(found.items()):
        if key.startswith(HTTP01 + "."):
            try:
                answers[grammar.host_list(key, key[len(HTTP01) + 1:])[0]] = parse_http01(value)
            except LabelError as err:
                problems.append(str(err))
    return versions, answers, problems


def secret_names(service_labels: Mapping[str, str], hosts: tuple[str, ...], certs: str) -> list[str]:
    """The ACME secrets (certificate, key) the issuer's `certs` label (on the proxy service)
    names for the service's own hosts, which `l7 deploy` mounts into the proxies; none when
    ssl_cert/ssl_key win or the label is bad."""
    found = dict(service_labels)
    if not wants_acme(found) or found.get(labels.PREFIX + "ssl_cert"):
        return []
    try:
        versions = parse_certs(certs)
    except LabelError:
        return []
    return [name for host, version in sorted(versions.items()) if host in hosts
            for name in acme_names.cert_secrets(host, version)]

