"""What `ingressmesh l7 deploy` may do through the filter: exactly the calls it makes
(`l7/proxy_service.py`, `agent/app.manager_controllers`), on its own proxy services only.

A proxy service spec may only be the shape `proxy_service.desired_spec` makes: the l7.toml
image running `ingressmesh proxy` with the options it passes (credential and CA at their fixed
paths, no `--haproxy`, `--workdir`, …), the fixed health check and environment, no mounts,
capabilities or other container settings, overlay networks only, and only secrets the proxies
may hold (its token secret, its controller CA, and what secret_policy allows).  So a taken
deployer cannot start another image, a privileged task or a bind mount of the host."""
from __future__ import annotations

import re
from typing import Mapping

from ..l7 import acme_names, secret_policy
from ..l7.acme_swarm import LEASE_SECRET
from ..l7.proxy_service import CA_PATH, HEALTH, TOKEN_PATH
from ..l7.settings import ProxyServiceSettings
from .calls import Call, Lookup, Refused

READS = {("GET", "/_ping"), ("HEAD", "/_ping"), ("GET", "/version"), ("GET", "/info"), ("GET", "/secrets"),
         ("GET", "/nodes")}  # nodes: whether host-mode proxies can roll start-first
TOKEN_SECRET = re.compile(r"^ingressmesh_token_[0-9a-f]{12}$")
_SECRET = re.compile(r"^/secrets/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})$")  # id or name
_SECRET_UPDATE = re.compile(r"^/secrets/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})/update$")
_UPDATE = re.compile(r"^/services/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})/update$")  # id or name
_TOP = {"Name", "Labels", "TaskTemplate", "Mode", "UpdateConfig", "EndpointSpec"}
_TASK = {"ContainerSpec", "Networks", "Placement", "RestartPolicy", "ForceUpdate"}
_CONTAINER = {"Image", "Command", "Env", "Labels", "StopGracePeriod", "Healthcheck", "Secrets"}
ENV = ["INGRESSMESH_TASK_ID={{.Task.ID}}"]
# `ingressmesh proxy` options desired_spec passes; None: any value, else the only one allowed
# (the service's own name is checked separately).
_OPTIONS = {"--token-file": TOKEN_PATH, "--ca": CA_PATH, "--controller": None, "--http-port": None,
            "--https-port": None, "--https-redirect-port": None, "--service-cluster": None,
            "--proxy-service": None, "--stop-linger": None, "--stop-linger-max": None,
            "--stop-timeout": None}


class DeployerRules:
    name = "l7-deploy"

    def __init__(self, settings: tuple[ProxyServiceSettings, ...], owner_service: str = "", stack_namespace: str = ""):
        self.proxies = {item.name: item for item in settings}
        self.owner_service, self.stack_namespace = owner_service, stack_namespace

    async def check(self, call: Call, lookup: Lookup) -> None:
        """Returns when the call may pass; raises Refused saying why not."""
        if (call.method, call.path) in READS:
            return
        if (call.method, call.path) == ("GET", "/services"):
            return self._listed_by_name(call, "name", set(self.proxies) | ({self.owner_service} - {""}))
        if (call.method, call.path) == ("GET", "/tasks"):  # whether a proxy service's rolling update is stuck
            return self._listed_by_name(call, "service", set(self.proxies))
        if (call.method, call.path) == ("POST", "/secrets/create"):
            body = call.json_body()
            name = body.get("Name")
            if isinstance(name, str) and _acme_certificate(name) and secret_policy.ACME_LABEL in (body.get("Labels") or {}):
                return  # an issued certificate version (acme_swarm.py)
            if name == LEASE_SECRET:
                return  # the issuer lease (acme_lease.py): never given to a proxy (secret_policy)
            if not isinstance(name, str) or not TOKEN_SECRET.match(name):
                raise Refused(f"only the proxies' token secret (ingressmesh_token_<hash>), ACME certificates "
                              f"(acme.<host>.<hash>.v<N>.crt|key) and {LEASE_SECRET} may be created, not {name!r}")
            return
        relabelled = _SECRET_UPDATE.match(call.path) if call.method == "POST" else None
        if relabelled:  # renewing or taking the issuer lease: its labels only
            name = ((await lookup(f"/secrets/{relabelled.group(1)}") or {}).get("Spec") or {}).get("Name")
            body = call.json_body()
            if name != LEASE_SECRET or body.get("Name") != LEASE_SECRET or set(body) - {"Name", "Labels"}:
                raise Refused(f"secret {relabelled.group(1)!r}: only the ACME issuer lease's labels may be updated")
            return
        removed = _SECRET.match(call.path) if call.method == "DELETE" else None
        if removed:  # the issuer removes replaced certificate versions, and those of hosts that no longer ask
            name = ((await lookup(f"/secrets/{removed.group(1)}") or {}).get("Spec") or {}).get("Name")
            if not isinstance(name, str) or not _acme_certificate(name):
                raise Refused(f"secret {removed.group(1)!r} is not an ACME certificate: only those may be removed")
            return
        if (call.method, call.path) == ("POST", "/services/create"):
            return await self._spec(call.json_body(), lookup)
        updated = _UPDATE.match(call.path) if call.method == "POST" else None
        if updated:
            current = await lookup(f"/services/{updated.group(1)}")
            name = ((current or {}).get("Spec") or {}).get("Name")
            if name not in self.proxies:
                raise Refused(f"service {updated.group(1)!r} is not a proxy service of l7.toml")
            spec = call.json_body()
            if spec.get("Name") != name:
                raise Refused(f"an update may not rename {name!r}")
            return await self._spec(spec, lookup)
        raise Refused("not a call l7 deploy makes")

    def _listed_by_name(self, call: Call, key: str, allowed: set) -> None:
        """Only by one name of its own (a service's spec may hold secrets in its environment)."""
        filters = call.filters()
        names = filters.get(key)
        if not set(filters) <= {key, "desired-state"} or not isinstance(names, list) or len(names) != 1:
            raise Refused(f"only listed by one {key} name")
        if names[0] not in allowed:
            raise Refused(f"{key} {names[0]!r} is neither a proxy service of l7.toml nor l7 deploy's own")

    async def _spec(self, spec: dict, lookup: Lookup) -> None:
        item = self.proxies.get(spec.get("Name"))
        if item is None:
            raise Refused(f"service {spec.get('Name')!r} is not a proxy service of l7.toml")
        _only(spec, _TOP, "service spec")
        task = spec.get("TaskTemplate")
        container = task.get("ContainerSpec") if isinstance(task, dict) else None
        if not isinstance(container, dict):
            raise Refused("no TaskTemplate.ContainerSpec")
        _only(task, _TASK, "TaskTemplate")
        _only(container, _CONTAINER, "ContainerSpec")
        if container.get("Image") != item.image:
            raise Refused(f"image {container.get('Image')!r} is not l7.toml's {item.image!r}")
        if container.get("Env", ENV) != ENV:
            raise Refused("the environment is not the proxies'")
        if (container.get("Healthcheck") or {}).get("Test") != ["CMD-SHELL", HEALTH]:
            raise Refused("the health check is not the proxies'")
        _command(container.get("Command"), item.name)
        for network in task.get("Networks") or ():
            target = network.get("Target") if isinstance(network, dict) else None
            found = await lookup(f"/networks/{target}") if isinstance(target, str) and target.isalnum() else None
            if not found or found.get("Driver") != "overlay":
                raise Refused(f"network {target!r} is not an overlay network")
        for secret in container.get("Secrets") or ():
            await self._secret(secret, item, lookup)

    async def _secret(self, secret: dict, item: ProxyServiceSettings, lookup: Lookup) -> None:
        secret_id, name = secret.get("SecretID"), secret.get("SecretName")
        found = await lookup(f"/secrets/{secret_id}") if isinstance(secret_id, str) and secret_id.isalnum() else None
        spec = (found or {}).get("Spec") or {}
        if spec.get("Name") != name:
            raise Refused(f"secret {secret_id!r} is not {name!r}")
        target = (secret.get("File") or {}).get("Name")
        labels: Mapping[str, str] = spec.get("Labels") or {}
        if target == TOKEN_PATH.rsplit("/", 1)[1] and TOKEN_SECRET.match(name):
            return
        if target == CA_PATH.rsplit("/", 1)[1] and name == item.ca_secret:
            return
        reason = secret_policy.why_not(name, labels, item, self.stack_namespace)
        if reason or target != name:
            raise Refused(f"secret {name!r} may not be mounted into the proxies ({reason or 'under another name'})")


def _acme_certificate(name: str) -> bool:
    parsed = acme_names.parse(name)
    return parsed is not None and not parsed.account


def _only(part: dict, allowed: set, what: str) -> None:
    extra = sorted(set(part) - allowed)
    if extra:
        raise Refused(f"{what} sets {', '.join(extra)}, which the proxies' spec never does")


def _command(argv, service: str) -> None:
    if not isinstance(argv, list) or argv[:2] != ["ingressmesh", "proxy"] or len(argv) % 2:
        raise Refused("the command is not `ingressmesh proxy` with its options")
    for option, value in zip(argv[2::2], argv[3::2]):
        if option not in _OPTIONS or not isinstance(value, str):
            raise Refused(f"option {option!r} is not one l7 deploy gives the proxies")
        wanted = service if option == "--proxy-service" else _OPTIONS[option]
        if wanted is not None and value != wanted:
            raise Refused(f"{option} {value!r}: only {wanted!r}")
