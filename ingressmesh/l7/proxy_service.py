"""Keeps each proxy service (the role of Interlock's core service) in shape.

`desired_spec` is pure: settings + the cluster → the Docker service spec, with the networks the
cluster's labelled services ask for (adding one, or dropping one nobody needs, is a rolling
update: start-first, so no request fails, or stop-first one replica at a time when the tasks
cannot be doubled: rollout.py).  `ProxyServices` compares a fingerprint of that spec
(kept as a service label) with what runs and creates or updates the service only on a change.

A change that would not replace the tasks (labels, e.g. the ACME issuer's; update config;
replicas) waits while Swarm is rolling the service.  Swarm's updater, given a new spec mid-roll,
keeps in each slot a task that already matches it and stops the slot's other tasks at once,
even when that task does not run yet (swarmkit updater.go, useExistingTask): with every slot
mid-roll, that stops every serving replica (measured: published port refused on every node for
~2 s).  A change that replaces the tasks is safe (the updater starts a replacement first).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any, Callable, Optional

from .. import model
from ..plan_source_ip import SOURCE_IP_LABEL
from . import acme_labels, labels, secret_policy
from .grammar import LabelError
from .routes import network_of
from .settings import ProxyServiceSettings

log = logging.getLogger(__name__)
SPEC_LABEL = "io.ingressmesh.l7.spec"
TASKS_LABEL = "io.ingressmesh.l7.tasks"  # fingerprint of what decides whether Swarm replaces a task
ROLE_LABEL = "io.ingressmesh.l7.proxy"
TOKEN_PATH = "/run/secrets/ingressmesh_token"
CA_PATH = "/run/secrets/ingressmesh_controller_ca"
HEALTH_PORT = 9403  # the proxy's --listen (/healthz, /metrics)


def health_command(port: int = HEALTH_PORT) -> str:
    """The proxy task's health check: its own /healthz (HAProxy runs and holds a route table) asked
    over bash's /dev/tcp, so a probe costs a shell, not a Python interpreter (~50 ms of CPU, which
    under load missed its timeout); the read gives up after 4 s, before Docker's timeout, so no
    probe outlives its check."""
    script = (f'exec 3<>/dev/tcp/127.0.0.1/{port} && printf "GET /healthz HTTP/1.0\\r\\n\\r\\n" >&3 '
              '&& read -t 4 -r _ code _ <&3 && [ "$code" = 200 ]')
    return f"bash -c '{script}'"


HEALTH = health_command()
# Every 5 s (each probe is a `docker exec`), 20 s to answer, 3 misses in a row and 120 s to start
# (a probe that passes earlier makes it healthy at once): CPU pressure alone (hundreds of services
# changing at once on 2 cores, or emulation) must not fail it.  With 10 s and 30 s, the IPVS rig's
# guest had Docker kill a starting proxy as unhealthy four times in a row.
HEALTH_TIMING = {"Interval": 5, "Timeout": 20, "Retries": 3, "StartPeriod": 120}
STOP_LINGER = 2.0  # at least this long after SIGTERM the proxy serves on (linger.py) ...
STOP_LINGER_MAX = 10.0  # ... and at most this long, while new connections still come
STOP_SPARE = 3.0  # seconds left before Swarm's SIGKILL


def stop_times(grace_period: float) -> tuple[float, float, float]:
    """(--stop-linger, --stop-linger-max, --stop-timeout) that fit Swarm's stop grace period: the
    linger takes at most half of (grace period - STOP_SPARE), at most STOP_LINGER_MAX, and its
    minimum is STOP_LINGER unless that is more; in-flight requests get the rest (at least 1 s)."""
    budget = max(0.0, grace_period - STOP_SPARE)
    linger_max = min(STOP_LINGER_MAX, budget / 2)
    return min(STOP_LINGER, linger_max), linger_max, max(1.0, budget - linger_max)


def _claimed_networks(cluster: model.Cluster, settings: ProxyServiceSettings):
    """(service, network it is reached on) for every routable labelled service of this cluster."""
    tasks: dict[str, list] = {}
    for task in cluster.tasks:
        tasks.setdefault(task.service_id, []).append(task)
    for service in cluster.services:
        if service.name == settings.name or not labels.wants_routing(service.labels):
            continue
        try:
            request = labels.parse(service.labels)
            if request.service_cluster != settings.service_cluster:
                continue
            network = network_of(service, request, cluster, tasks.get(service.id, ()))
        except LabelError:
            continue  # refused by name in the proxies' own logs and /healthz
        yield service, network


def _stack_own(service: model.Service, network: model.Network, settings: ProxyServiceSettings) -> Optional[str]:
    """With a RoutingNetwork, the stack whose own network (`<namespace>_<name>`) `network` is: the
    proxies do not join it, so `docker stack rm` never finds them on it (Swarm refuses to remove
    a network a service names, and the stack's services and networks go within milliseconds)."""
    stack = dict(service.labels).get(secret_policy.STACK_LABEL, "")
    if settings.routing_network and network.name != settings.routing_network and stack \
            and network.name.startswith(f"{stack}_"):
        return stack
    return None


def networks_needed(cluster: model.Cluster, settings: ProxyServiceSettings) -> list[model.Network]:
    """The networks of every routable labelled service of this proxy's service cluster (but a
    stack's own network when there is a RoutingNetwork: kept_off), and the RoutingNetwork
    (always, so a service joining it never rolls the proxies; see routing_network)."""
    found = {network.id: network for service, network in _claimed_networks(cluster, settings)
             if _stack_own(service, network, settings) is None}
    routing = routing_network(cluster, settings)
    if routing is not None:
        found[routing.id] = routing
    return sorted(found.values(), key=lambda n: n.name)


def kept_off(cluster: model.Cluster, settings: ProxyServiceSettings) -> list[str]:
    """Why each labelled service on its stack's own network is not routed (a RoutingNetwork is set)."""
    return sorted(f"service {service.name}: not routed: network {network.name} is stack {stack}'s own, and with "
                  f"RoutingNetwork {settings.routing_network!r} the proxies join no stack's own network (docker "
                  f"stack rm could not remove it while they are on it): put the service on "
                  f"{settings.routing_network} (an external network of the stack) and name it in "
                  f"com.docker.lb.network"
                  for service, network in _claimed_networks(cluster, settings)
                  if (stack := _stack_own(service, network, settings)) is not None)


def routing_network(cluster: model.Cluster, settings: ProxyServiceSettings) -> Optional[model.Network]:
    """The RoutingNetwork l7.toml names, when it exists.  Stacks that put their labelled services
    on it (declared `external`, com.docker.lb.network naming it) never leave the proxies attached
    to a network of theirs: `docker stack rm` removes their own networks the first time."""
    if not settings.routing_network:
        return None
    return next((n for n in cluster.networks if n.name == settings.routing_network and not n.ingress), None)


def secret_claims(cluster: model.Cluster, settings: ProxyServiceSettings, acme_certs: str = ""
                  ) -> dict[str, tuple[str, ...]]:
    """Secret name (certificate, key, backend CA) -> the routable services of this cluster naming it;
    `acme_certs`: the issuer's `io.ingressmesh.lb.acme.certs` label on the proxy service."""
    found: dict[str, set[str]] = {}
    for service in cluster.services:
        if service.name == settings.name or not labels.wants_routing(service.labels):
            continue
        try:
            request = labels.parse(service.labels)
        except LabelError:
            continue
        if request.service_cluster == settings.service_cluster:
            for name in (n for n in (request.tls.cert, request.tls.key, request.tls.ca) if n):
                found.setdefault(name, set()).add(service.name)
            for name in acme_labels.secret_names(service.labels, request.hosts, acme_certs):  # issued certificates
                found.setdefault(name, set()).add(service.name)
    return {name: tuple(sorted(services)) for name, services in sorted(found.items())}


def secrets_needed(cluster: model.Cluster, settings: ProxyServiceSettings) -> list[str]:
    """Secret names the routable services of this cluster name (before secret_policy decides)."""
    return list(secret_claims(cluster, settings))


def _nanos(seconds: float) -> int:
    return int(seconds * 1e9)


def _secret(secret: tuple[str, str], file_name: str) -> dict:
    return {"SecretID": secret[0], "SecretName": secret[1],
            "File": {"Name": file_name, "UID": "0", "GID": "0", "Mode": 0o400}}


def desired_spec(settings: ProxyServiceSettings, cluster: model.Cluster, token_secret: tuple[str, str],
                 controllers: tuple[str, ...], ca_secret: Optional[tuple[str, str]] = None,
                 label_secrets: tuple[tuple[str, str], ...] = (), order: str = "start-first") -> dict:
    """The service spec (Docker API shape).  Secrets are (secret id, secret name); with
    `ca_secret` the proxies verify the controller's TLS certificate against it; `label_secrets`
    are the certificates and keys labelled services name (mounted under their own names);
    `order` is the update order rollout.update_order chose."""
    linger, linger_max, stop_timeout = stop_times(settings.stop_grace_period)
    argv = ["ingressmesh", "proxy", "--token-file", TOKEN_PATH, "--http-port", "80",
            "--proxy-service", settings.name, "--stop-linger", f"{linger:g}",
            "--stop-linger-max", f"{linger_max:g}", "--stop-timeout", f"{stop_timeout:g}"]
    for url in controllers:
        argv += ["--controller", url]
    if settings.service_cluster:
        argv += ["--service-cluster", settings.service_cluster]
    if settings.published_ssl_port:
        argv += ["--https-port", "443", "--https-redirect-port", str(settings.published_ssl_port)]
    if settings.accept_proxy:
        argv.append("--accept-proxy-protocol")
    secrets = [_secret(token_secret, "ingressmesh_token")]
    # secret_policy.decide chose label_secrets; ingressmesh's own names are refused once more here.
    secrets += [_secret(s, s[1]) for s in label_secrets if not secret_policy.reserved(s[1])]
    if ca_secret is not None:
        argv += ["--ca", CA_PATH]
        secrets.append(_secret(ca_secret, CA_PATH.rsplit("/", 1)[1]))
    task_template = {
        "ContainerSpec": {
            "Image": settings.image, "Command": argv,
            "Env": ["INGRESSMESH_TASK_ID={{.Task.ID}}"],
            "Labels": {ROLE_LABEL: settings.service_cluster or "default"},
            "StopGracePeriod": _nanos(settings.stop_grace_period),
            "Healthcheck": {"Test": ["CMD-SHELL", HEALTH], "Retries": HEALTH_TIMING["Retries"],
                            **{k: _nanos(v) for k, v in HEALTH_TIMING.items() if k != "Retries"}},
            "Secrets": secrets,
        },
        "Networks": [{"Target": n.id} for n in networks_needed(cluster, settings)],
        "Placement": {"Constraints": list(settings.constraints)},
        "RestartPolicy": {"Condition": "any", "Delay": _nanos(1)},
    }
    service_labels = {ROLE_LABEL: settings.service_cluster or "default"}
    if settings.source_ip:  # the L4 mesh keeps (or not) the client's address on the published ports
        service_labels[SOURCE_IP_LABEL] = settings.source_ip
    return {
        "Name": settings.name,
        "Labels": service_labels,
        "TaskTemplate": task_template,
        "Mode": {"Replicated": {"Replicas": settings.replicas}},
        "UpdateConfig": {"Parallelism": 1, "Delay": _nanos(settings.update_delay), "Order": order,
                         "FailureAction": "pause", "Monitor": _nanos(5)},
        "EndpointSpec": {"Mode": "vip", "Ports": [
            {"Protocol": "tcp", "TargetPort": target, "PublishedPort": published, "PublishMode": settings.publish_mode}
            for target, published in ((80, settings.published_port), (443, settings.published_ssl_port)) if published]},
    }


def fingerprint(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def tasks_fingerprint(spec: dict) -> str:
    """What Swarm compares to decide a task is out of date: its template and the published ports."""
    return fingerprint({"TaskTemplate": spec["TaskTemplate"], "EndpointSpec": spec["EndpointSpec"]})


ROLLING = ("updating", "rollback_started")
NOT_YET_RUNNING = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting")
RECENT = 16  # task fingerprints remembered per service (a change back to one of them mid-roll waits too)
# A proxy service this process made and then found removed is made again only this many seconds
# later: `docker stack rm` removes the proxy services (they sort first) before l7 deploy's own, and
# a pass in between (the removals change the snapshot) would otherwise make them again, left
# behind with the secrets they mount.  By then the stack's l7 task has been stopped.
REMADE_AFTER = 15.0


def replacing(service: dict, tasks: Callable[[], list[dict]]) -> bool:
    """Swarm is rolling the service: its update runs, or a task meant to run does not run yet (a
    start-first replacement; the update state is reset by each spec update, so tasks are asked
    too).  `tasks` is called only when the update state does not already say so."""
    if (service.get("UpdateStatus") or {}).get("State") in ROLLING:
        return True
    return any(t.get("DesiredState") in ("ready", "running") and (t.get("Status") or {}).get("State") in NOT_YET_RUNNING
               for t in tasks())


class ProxyServices:
    """Creates, updates and removes proxy services through a manager's Docker API."""

    def __init__(self, api, token: str, labels: Optional[dict] = None, clock: Callable[[], float] = time.monotonic):
        self.api, self.token = api, token
        self.labels = dict(labels or {})  # on what it creates, e.g. the stack it belongs to
        self._recent: dict[str, tuple[str, ...]] = {}  # service -> task fingerprints this process pushed
        self._held: dict[str, str] = {}  # service -> the spec fingerprint last held back (said once)
        self._gone_since: dict[str, float] = {}  # service (or token secret) this process saw, found removed -> when
        self._token: Optional[tuple[str, str]] = None  # the token secret last seen or made: (id, name)
        self.clock = clock

    def token_secret(self) -> tuple[str, str]:
        """A secret holding the token; its name carries the content hash (secrets are immutable).
        One this process made or found and then saw removed is made again only REMADE_AFTER s
        later, as a proxy service is: `docker stack rm` removes the stack's secrets while l7
        deploy may still run a pass, which would leave a new copy behind (seen once in the lab)."""
        name = "ingressmesh_token_" + hashlib.sha256(self.token.encode()).hexdigest()[:12]
        found = self.api.secrets(filters={"name": name})
        found = [s for s in found if s["Spec"]["Name"] == name]
        if found:
            self._gone_since.pop(name, None)
            self._token = (found[0]["ID"], name)
            return self._token
        if self._token is not None and self._token[1] == name and \
                self.clock() - self._gone_since.setdefault(name, self.clock()) < REMADE_AFTER:
            return self._token  # its proxy services went with it: ensure() defers them meanwhile
        created = self.api.create_secret(name, self.token.encode(), labels={ROLE_LABEL: "token", **self.labels})
        self._gone_since.pop(name, None)
        self._token = (created["ID"], name)
        return self._token

    def existing_secrets(self) -> dict[str, tuple[str, dict]]:
        """Every secret of the swarm: name -> (id, labels); secret_policy decides which may be mounted."""
        return {s["Spec"]["Name"]: (s["ID"], dict(s["Spec"].get("Labels") or {})) for s in self.api.secrets()}

    def existing_secret(self, name: str) -> tuple[str, str]:
        """(id, name) of a secret the operator created (e.g. the controller's CA)."""
        found = [s for s in self.api.secrets(filters={"name": name}) if s["Spec"]["Name"] == name]
        if not found:
            raise LookupError(f"Docker secret {name!r} does not exist (docker secret create {name} ca.pem)")
        return found[0]["ID"], name

    def nodes(self) -> list[dict]:
        return self.api.nodes()

    def tasks(self, name: str) -> list[dict]:
        return self.api.tasks(filters={"service": name})

    def current(self, name: str) -> Optional[dict]:
        found = [s for s in self.api.services(filters={"name": name}) if s["Spec"]["Name"] == name]
        return found[0] if found else None

    def ensure(self, spec: dict, may_wait: Callable[[], bool] = lambda: True, current: Any = ...) -> str:
        """'created', 'updated', 'unchanged' or 'deferred' (a change that replaces no task, held
        while Swarm rolls the service: see the module's docstring; `may_wait()` False, e.g. the
        roll is stuck, pushes it anyway).  `current`: the service as the caller read it (None: none
        then), whose version the update names; read here when not given."""
        name, wanted, tasks = spec["Name"], fingerprint(spec), tasks_fingerprint(spec)
        labelled = {**spec["Labels"], SPEC_LABEL: wanted, TASKS_LABEL: tasks}
        current = self.current(name) if current is ... else current
        args = dict(task_template=spec["TaskTemplate"], name=name, labels=labelled, mode=spec["Mode"],
                    update_config=spec["UpdateConfig"], endpoint_spec=spec["EndpointSpec"])
        if current is None:
            if name in self._recent and self.clock() - self._gone_since.setdefault(name, self.clock()) < REMADE_AFTER:
                if self._held.get(name) != "gone":
                    log.info("proxy service %s was removed (by docker stack rm, or by hand): made again in %.0f s "
                             "unless l7 deploy's own service goes too", name, REMADE_AFTER)
                self._held[name] = "gone"
                return "deferred"
            self.api.create_service(**args)
            log.info("proxy service %s created", name)
            self._recent[name] = (tasks,)
            self._gone_since.pop(name, None)
            return "created"
        self._gone_since.pop(name, None)
        running = current["Spec"].get("Labels") or {}
        if running.get(SPEC_LABEL) == wanted:
            return "unchanged"
        matching = tasks in self._recent.get(name, ()) or tasks == running.get(TASKS_LABEL)
        if matching and replacing(current, lambda: self.tasks(name)) and may_wait():
            if self._held.get(name) != wanted:
                log.info("proxy service %s: change held while Swarm rolls the service (it replaces no task; "
                         "pushed mid-roll, Swarm would stop the serving tasks before their replacements run)", name)
            self._held[name] = wanted
            return "deferred"
        self._held.pop(name, None)
        self.api.update_service(current["ID"], current["Version"]["Index"], **args)
        self._recent[name] = (*[f for f in self._recent.get(name, ()) if f != tasks], tasks)[-RECENT:]
        log.info("proxy service %s updated (networks: %s)", spec["Name"],
                 ", ".join(n["Target"][:12] for n in spec["TaskTemplate"]["Networks"]) or "none")
        return "updated"

    def remove(self, name: str) -> bool:
        current = self.current(name)
        if current is None:
            return False
        self.api.remove_service(current["ID"])
        return True
