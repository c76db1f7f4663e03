"""Which Docker secrets the labels may hand to the proxies (issue 19.5).

A label names a secret by name, and the proxy service is then updated to mount it: without a
rule, any service's labels could copy any secret in the swarm (the cluster secret, another
team's database password) into every internet-facing proxy.  So a secret reaches the proxies
only when the operator allowed it, decided here before any proxy service update:

- allowed: its name matches a `ProxySecrets` entry of the proxy service's l7.toml table (best
  an exact name; a shell-style glob admits every secret it matches, now and later: "demo_*" is
  every secret of stack demo and of any stack named demo_...; a glob with fewer than 3 characters
  besides * and ? is refused when l7.toml is loaded), or the
  secret itself carries the label `io.ingressmesh.l7.secret=true` (set by whoever created it:
  `docker secret create --label io.ingressmesh.l7.secret=true ...`, or `labels:` in a stack file);
- an ACME certificate version (`acme.<host>.<hash>.v<N>.crt|key`, acme_names.py) carrying the
  label `io.ingressmesh.l7.acme` (the issuer's, acme_swarm.py), also in the ingressmesh stack
  (`docker stack rm` removes it); which versions are mounted only the proxy service's own
  labels say (acme_routes.py, proxy_service.secret_claims);
- never, whatever the patterns or labels say: ingressmesh's own credentials (names starting with
  "ingressmesh", secrets ingressmesh made, the TokenSecret/ControllerCASecret of the settings)
  and every secret of the stack the deployer itself belongs to.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Mapping

from . import acme_names
from .settings import ProxyServiceSettings

ALLOW_LABEL = "io.ingressmesh.l7.secret"
OWN_LABEL = "io.ingressmesh.l7.proxy"  # on the proxies' token secret (proxy_service.ROLE_LABEL)
STACK_LABEL = "com.docker.stack.namespace"
RESERVED_PREFIX = "ingressmesh"
ACME_LABEL = "io.ingressmesh.l7.acme"  # acme_swarm.SECRET_LABEL


def reserved(name: str) -> bool:
    """An ingressmesh credential's name: never a certificate a label may name."""
    return name.lower().startswith(RESERVED_PREFIX)


@dataclass(frozen=True)
class SecretRefusal:
    secret: str
    services: tuple[str, ...]  # the labelled services that name it
    reason: str

    def line(self) -> str:
        return (f"secret {self.secret} (named by {', '.join(self.services)}) is not given to the proxies: "
                f"{self.reason}")


def why_not(name: str, labels: Mapping[str, str], settings: ProxyServiceSettings, own_stack: str) -> str:
    """'' when the secret may be mounted into this proxy service; else why not."""
    if reserved(name) or name in (settings.token_secret, settings.ca_secret) or OWN_LABEL in labels:
        return "an ingressmesh credential: never mounted into the proxies"
    parsed = acme_names.parse(name)
    if parsed is not None and not parsed.account and ACME_LABEL in labels:
        return ""
    if own_stack and labels.get(STACK_LABEL) == own_stack:
        return f"a secret of the ingressmesh stack {own_stack}: never mounted into the proxies"
    if labels.get(ALLOW_LABEL, "").lower() == "true":
        return ""
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in settings.proxy_secrets):
        return ""
    return (f"not allowed: list it in ProxySecrets of [Extensions] for {settings.name} in l7.toml, or create it "
            f"with the label {ALLOW_LABEL}=true")


def decide(claims: Mapping[str, tuple[str, ...]], existing: Mapping[str, tuple[str, Mapping[str, str]]],
           settings: ProxyServiceSettings, own_stack: str = ""
           ) -> tuple[tuple[tuple[str, str], ...], tuple[SecretRefusal, ...]]:
    """claims: secret name -> services naming it; existing: name -> (id, labels) of the swarm's
    secrets.  ((id, name) to mount, refusals), both sorted by name."""
    mount, refused = [], []
    for name in sorted(claims):
        if name not in existing:
            refused.append(SecretRefusal(name, claims[name], "no such Docker secret"))
            continue
        secret_id, labels = existing[name]
        reason = why_not(name, labels, settings, own_stack)
        if reason:
            refused.append(SecretRefusal(name, claims[name], reason))
        else:
            mount.append((secret_id, name))
    return tuple(mount), tuple(refused)
