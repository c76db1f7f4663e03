"""One pass of `ingressmesh l7 deploy`: every proxy service of l7.toml brought in line with the
cluster, the secrets its labels name first put through secret_policy, so a secret the operator
did not allow is refused by name before any proxy service update could mount it."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import docker

from .. import model
from ..swarm.convert import parse_timestamp
from . import acme_labels, rollout, secret_policy
from .proxy_service import ProxyServices, desired_spec, kept_off, routing_network, secret_claims
from .secret_policy import STACK_LABEL, SecretRefusal
from .settings import ProxyServiceSettings


@dataclass(frozen=True)
class Deployed:
    name: str  # the proxy service
    outcome: str  # 'created', 'updated', 'unchanged' or 'deferred' (held while Swarm rolls it: proxy_service.py)
    mounted: tuple[str, ...]  # the label secrets it mounts
    refused: tuple[SecretRefusal, ...]
    order: str = rollout.START_FIRST  # how it rolls (rollout.update_order)
    problem: Optional[str] = None  # why its rolling update is stuck, if it is
    kept_off: tuple[str, ...] = ()  # services on their stack's own network, not joined (RoutingNetwork)


def deploy_once(services: ProxyServices, settings: tuple[ProxyServiceSettings, ...], cluster: model.Cluster,
                controllers: tuple[str, ...], stack_namespace: str = "",
                issuer: Optional[dict[str, dict[str, str]]] = None) -> list[Deployed]:
    """Raises LookupError when a ControllerCASecret does not exist (the message names it).
    `issuer`: the ACME issuer's labels per proxy service (acme_swarm.py); None (no issuer runs
    here): the labels the proxy service carries are kept, so are the certificates they mount."""
    # Each proxy service as it is now, read before the secrets (a certificate version its labels
    # name was created before them) and written back at this version: Swarm refuses the write if
    # anyone (the ACME issuer of another l7 deploy) changed the service since.
    currents = {item.name: services.current(item.name) for item in settings}
    token = services.token_secret()
    existing = services.existing_secrets()
    nodes = _nodes(services) if any(item.publish_mode == "host" for item in settings) else []
    done = []
    for item in settings:
        try:
            ca = services.existing_secret(item.ca_secret) if item.ca_secret else None
        except LookupError as err:
            raise LookupError(f"{item.name}: ControllerCASecret: {err}") from None
        acme = issuer.get(item.name) if issuer is not None else None
        if acme is None:
            acme = acme_labels.issuer_labels(((currents[item.name] or {}).get("Spec") or {}).get("Labels") or {})
        claims = secret_claims(cluster, item, acme.get(acme_labels.CERTS, ""))
        mount, refused = secret_policy.decide(claims, existing, item, stack_namespace)
        order = rollout.update_order(item, rollout.eligible_nodes(nodes, item.constraints) if nodes else None)
        spec = desired_spec(item, cluster, token, item.controllers or tuple(controllers), ca, mount, order)
        spec["Labels"].update(acme)  # the issuer's: challenges and served versions (acme_routes.py)
        if stack_namespace:
            spec["Labels"][STACK_LABEL] = stack_namespace
        # A stuck roll (rollout.update_problem) is not waited for: the new spec may be what unsticks it.
        outcome = services.ensure(spec, may_wait=lambda: update_problem(services, item) is None,
                                  current=currents[item.name])
        problem = update_problem(services, item)
        if item.routing_network and routing_network(cluster, item) is None:
            problem = (f"{item.name}: RoutingNetwork {item.routing_network!r} is not an overlay network of the swarm "
                       f"(docker network create --driver overlay --attachable {item.routing_network})")
        done.append(Deployed(item.name, outcome, tuple(n for _, n in mount), refused, order, problem,
                             tuple(kept_off(cluster, item))))
    return done


def _nodes(services: ProxyServices) -> list[dict]:
    """The swarm's nodes; none when they cannot be read (e.g. a docker-filter that passes no node
    reads): host-mode proxies then roll stop-first, which never waits for a free node."""
    try:
        return services.nodes()
    except docker.errors.APIError:
        return []


def update_problem(services: ProxyServices, item: ProxyServiceSettings) -> Optional[str]:
    """Why the proxy service's rolling update is stuck (rollout.update_problem), or None."""
    current = services.current(item.name)
    if current is None:
        return None
    try:
        return rollout.update_problem(current, lambda: services.tasks(item.name), time.time(), parse_timestamp,
                                      rollout.patience(item))
    except docker.errors.APIError as err:
        return f"proxy service {item.name}: cannot tell whether its update is stuck (its tasks: {err})"
