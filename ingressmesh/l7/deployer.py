"""One pass of `ingressmesh l7 deploy`: every proxy service of l7.toml brought in line with the
cluster, the secrets its labels name first put through secret_policy, so a secret the operator
did not allow is refused by name before any proxy service update could mount it."""
from __future__ import annotations

from dataclasses import dataclass

from .. import model
from . import secret_policy
from .proxy_service import ProxyServices, desired_spec, secret_claims
from .secret_policy import STACK_LABEL, SecretRefusal
from .settings import ProxyServiceSettings


@dataclass(frozen=True)
class Deployed:
    name: str  # the proxy service
    outcome: str  # 'created', 'updated' or 'unchanged'
    mounted: tuple[str, ...]  # the label secrets it mounts
    refused: tuple[SecretRefusal, ...]


def deploy_once(services: ProxyServices, settings: tuple[ProxyServiceSettings, ...], cluster: model.Cluster,
                controllers: tuple[str, ...], stack_namespace: str = "") -> list[Deployed]:
    """Raises LookupError when a ControllerCASecret does not exist (the message names it)."""
    token = services.token_secret()
    existing = services.existing_secrets()
    done = []
    for item in settings:
        try:
            ca = services.existing_secret(item.ca_secret) if item.ca_secret else None
        except LookupError as err:
            raise LookupError(f"{item.name}: ControllerCASecret: {err}") from None
        mount, refused = secret_policy.decide(secret_claims(cluster, item), existing, item, stack_namespace)
        spec = desired_spec(item, cluster, token, item.controllers or tuple(controllers), ca, mount)
        if stack_namespace:
            spec["Labels"][STACK_LABEL] = stack_namespace
        done.append(Deployed(item.name, services.ensure(spec), tuple(n for _, n in mount), refused))
    return done
