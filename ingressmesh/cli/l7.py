"""CLI for the L7 layer: `ingressmesh proxy` (inside proxy tasks), `ingressmesh l7 …` (the proxy
services, on a manager; the proxy's state, inside a task)."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time

import click

from .daemons import (_credentials, _listen, _run_until_signalled, docker_option, tls_client_options,
                          token_option)


@click.command("proxy")
@click.option("--controller", "controllers", multiple=True, required=True, help="Controller URL (repeat for fail-over).")
@token_option
@tls_client_options
@click.option("--service-cluster", default="", help="Serve only services labelled with this com.docker.lb.service_cluster.")
@click.option("--proxy-service", default="", help="This proxy's own service name (never routed to).")
@click.option("--task-id", default=lambda: os.environ.get("INGRESSMESH_TASK_ID", ""),
              help="This task's swarm id [env INGRESSMESH_TASK_ID]: which networks the proxy has joined.")
@click.option("--http-port", default=80, show_default=True, type=click.IntRange(1, 65535))
@click.option("--bind", "bind_address", default="0.0.0.0", show_default=True)
@click.option("--https-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="HTTPS listener (TLS hosts, SNI passthrough); 0: none (TLS services are refused by name).")
@click.option("--https-redirect-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="The published HTTPS port ssl_only redirects to (0: --https-port).")
@click.option("--secrets-dir", default="/run/secrets", show_default=True,
              help="Where the Docker secrets named by ssl_cert/ssl_key/ssl_backend_ca are mounted.")
@click.option("--websocket-timeout", default="24h", show_default=True,
              help="Tunnel timeout on com.docker.lb.websocket_endpoints paths.")
@click.option("--accept-proxy-protocol", "accept_proxy", is_flag=True,
              help="Every connection to the HTTP/HTTPS ports opens with a PROXY v1/v2 header (an L4 balancer in "
                   "front): its client address is used. Connections without one are closed.")
@click.option("--stats-port", default=8405, show_default=True, type=click.IntRange(1, 65535),
              help="HAProxy's Prometheus exporter (/metrics).")
@click.option("--listen", default="0.0.0.0:9403", show_default=True, callback=_listen, help="/healthz and /metrics.")
@click.option("--workdir", default="/run/ingressmesh-proxy", show_default=True)
@click.option("--proxy-id", default=lambda: socket.gethostname(), help="X-Proxy-Id (default: the hostname).")
@click.option("--drain-grace", default=10.0, show_default=True)
@click.option("--stop-linger", default=2.0, show_default=True, type=click.FloatRange(0, 3600),
              help="Seconds to keep serving after SIGTERM, at least.")
@click.option("--stop-linger-max", default=10.0, show_default=True, type=click.FloatRange(0, 3600),
              help="After --stop-linger, keep serving while new connections still come (the mesh has not taken "
                   "this task out of every node yet), at most this many seconds after SIGTERM. "
                   "Not above --stop-linger: a fixed wait.")
@click.option("--stop-timeout", default=20.0, show_default=True, help="Seconds in-flight requests get to finish.")
@click.option("--hard-stop-after", default="30m", show_default=True,
              help="How long an old worker keeps long-lived connections after a reload.")
@click.option("--haproxy", "haproxy_binary", default="haproxy", show_default=True)
def proxy_command(controllers, token_file, ca_file, tls_verify, service_cluster, proxy_service, task_id, http_port,
                  bind_address, https_port, https_redirect_port, secrets_dir, websocket_timeout, accept_proxy,
                  stats_port, listen,
                  workdir, proxy_id, drain_grace, stop_linger, stop_linger_max, stop_timeout, hard_stop_after, haproxy_binary) -> None:
    """Run HAProxy for the com.docker.lb.* routes of one service cluster (the proxy service's task)."""
    from ..l7 import grammar
    from ..l7.proxy import Proxy, ProxyConfig
    from ..l7.render import ProxySettings
    try:
        proxy_id = grammar.host("--proxy-id", proxy_id)
    except grammar.LabelError as err:
        raise click.BadParameter(str(err)) from None
    for option, value in (("--hard-stop-after", hard_stop_after), ("--websocket-timeout", websocket_timeout)):
        if not re.fullmatch(r"[0-9]{1,6}(ms|s|m|h|d)?", value):
            raise click.BadParameter(f"{option} {value!r}: expected a duration like 30m, 90s or 2h")
    if https_port and https_port in (http_port, stats_port):
        raise click.BadParameter(f"--https-port {https_port}: already the HTTP or stats port")
    if not os.path.isabs(secrets_dir):
        raise click.BadParameter(f"--secrets-dir {secrets_dir!r}: expected an absolute path")
    try:
        ipaddress.IPv4Address(bind_address)
    except ValueError:
        raise click.BadParameter(f"--bind {bind_address!r}: expected an IPv4 address") from None
    settings = ProxySettings(http_port=http_port, bind_address=bind_address, stats_port=stats_port,
                             https_port=https_port, https_redirect_port=https_redirect_port,
                             secrets_dir=secrets_dir, websocket_timeout=websocket_timeout,
                             proxy_id=proxy_id, server_info="ingressmesh", hard_stop_after=hard_stop_after,
                             accept_proxy=accept_proxy)
    config = ProxyConfig(controllers=tuple(controllers), workdir=workdir, settings=settings,
                         service_cluster=service_cluster, proxy_service=proxy_service, task_id=task_id,
                         listen=listen, drain_grace=drain_grace, stop_linger=stop_linger,
                         stop_linger_max=stop_linger_max, stop_timeout=stop_timeout, haproxy_binary=haproxy_binary)
    try:
        proxy = Proxy(config, _credentials(token_file, ca_file, tls_verify))
    except OSError as err:
        raise click.ClickException(f"cannot start the proxy: {err}") from None
    # Only SIGTERM/SIGINT stop the proxy.  SIGHUP reloads HAProxy (same routes, fresh worker);
    # SIGUSR1/SIGUSR2 (which would kill a Python process) are logged and ignored.
    signal.signal(signal.SIGHUP, lambda *_: proxy.reload_requested.set())
    for ignored in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(ignored, lambda signum, _frame: logging.getLogger("ingressmesh.proxy").info(
            "signal %d ignored (SIGTERM stops, SIGHUP reloads)", signum))
    _run_until_signalled(proxy.run)


@click.group("l7")
def l7_group() -> None:
    """The L7 proxy services (Interlock's com.docker.lb.* labels on HAProxy)."""


config_option = click.option("--config", "config_path", required=True,
                             help="Proxy services file ([Extensions.<name>] tables, Interlock's config.toml keys).")


def _settings(path: str):
    from ..l7.settings import SettingsError, load
    try:
        return load(path)
    except SettingsError as err:
        raise click.ClickException(str(err)) from None


def _snapshot(client, patience: float = 60.0):
    """The controller's snapshot; a controller that has none yet (just started) is waited for."""
    import time
    from .. import snapshot
    from ..agent.controller_client import ControllerError
    deadline = time.monotonic() + patience
    try:
        while True:
            got = client.follow(0, min(5.0, max(0.0, deadline - time.monotonic())))
            if got is not None:
                return got[0], snapshot.from_dict(got[1])
            if time.monotonic() >= deadline:
                raise click.ClickException(f"the controller has no snapshot yet after {patience:g} s")
    except (ControllerError, snapshot.SnapshotError, TypeError) as err:
        raise click.ClickException(f"cannot read the controller's snapshot: {err}") from None


def _acme_settings(path: str):
    """l7.toml's [ACME] table (None: no automatic certificates)."""
    from ..l7.acme_settings import load
    from ..l7.settings import SettingsError
    try:
        return load(path)
    except SettingsError as err:
        raise click.ClickException(str(err)) from None


@l7_group.command("deploy")
@config_option
@docker_option
@token_option
@tls_client_options
@click.option("--controller", "controllers", multiple=True,
              help="Controller URL the proxies follow (reachable from the proxy tasks).  Default: one on every "
                   "swarm manager, port 9401 (the swarm stack runs them there).")
@click.option("--watch", is_flag=True, help="Keep following the snapshot: attach and detach networks as labels change.")
@click.option("--stack-namespace", default="", envvar="INGRESSMESH_STACK_NAMESPACE",
              help="Label the proxy services and their token secret as part of this stack, so `docker stack rm` "
                   "removes them with it (the swarm stack sets it).")
@click.option("--owner-service", default="", envvar="INGRESSMESH_OWNER_SERVICE",
              help="The swarm service this command runs as (the stack sets it): once it is gone, proxy services "
                   "are no longer created or updated.")
@click.option("--proxy-ca-secret", default="", envvar="INGRESSMESH_PROXY_CA_SECRET", metavar="SECRET",
              help="Docker secret with the controllers' CA, mounted into the proxy services whose l7.toml entry "
                   "names no ControllerCASecret (the stack with --tls sets it).")
@click.option("--listen", default="", metavar="HOST:PORT",
              callback=lambda ctx, param, value: _listen(ctx, param, value) if value else None,  # "": none
              help="With --watch: serve /healthz here (each proxy service, a stuck rolling update: 503).")
def deploy_command(config_path, docker_url, token_file, ca_file, tls_verify, controllers, watch,
                   stack_namespace, owner_service, proxy_ca_secret, listen) -> None:
    """Create or update the proxy services; with --watch keep their networks in line with the labels."""
    import docker
    from ..agent.app import manager_controllers
    from ..agent.controller_client import ControllerClient, ControllerError
    from ..daemon.credentials import is_derived, reader_credential
    from ..l7.deployer import deploy_once
    from ..l7.proxy_service import ProxyServices
    from ..l7.settings import SettingsError, with_default_ca_secret
    settings = _settings(config_path)
    try:
        settings = with_default_ca_secret(settings, proxy_ca_secret)
    except SettingsError as err:
        raise click.ClickException(str(err)) from None
    credentials = _credentials(token_file, ca_file, tls_verify)
    if not controllers:
        try:
            controllers = manager_controllers(docker_url, 9401, ca_file is not None)
        except Exception as err:  # noqa: BLE001 - any docker failure: say which daemon and why
            raise click.ClickException(f"no --controller given, and the swarm's managers cannot be learnt "
                                       f"from {docker_url}: {err}") from None
    stack_labels = {"com.docker.stack.namespace": stack_namespace} if stack_namespace else {}
    # The proxies only read snapshots, and they are the most exposed tasks (HAProxy on published
    # ports): given the cluster secret, they get the read-only credential made from it instead.
    proxy_token = credentials.token if is_derived(credentials.token) else reader_credential(credentials.token)
    services = ProxyServices(docker.APIClient(base_url=docker_url, version="auto", timeout=30), proxy_token,
                             stack_labels)
    client = ControllerClient(list(controllers), credentials)

    said: set[str] = set()  # refusals already printed (the watch loop reconciles on every snapshot)
    from ..l7.deploy_health import DeployHealth
    health = DeployHealth()
    acme = _acme_settings(config_path) if watch else None
    issuers, latest, deploying = None, {}, threading.Lock()  # the issuer's thread pushes labels too

    def reconcile(cluster):
        with deploying:
            _reconcile(cluster)

    def _reconcile(cluster):
        if owner_service and services.current(owner_service) is None:
            # Our own service is gone: the stack is being removed (`docker stack rm` removes the
            # proxies too); creating them again now would leave them behind.
            click.echo(f"l7 deploy: my service {owner_service} is gone: leaving the proxy services alone", err=True)
            return
        try:
            done = deploy_once(services, settings, cluster, tuple(controllers), stack_namespace,
                               issuers.labels() if issuers is not None else None)
        except LookupError as err:
            raise click.ClickException(str(err)) from None
        lines = {f"l7 deploy: {d.name}: {r.line()}" for d in done for r in d.refused}
        lines |= {f"l7 deploy: {d.problem}" for d in done if d.problem}  # a stuck rolling update
        lines |= {f"l7 deploy: {d.name}: {line}" for d in done for line in d.kept_off}
        health.passed(done, [line for d in done for line in (*(r.line() for r in d.refused), *d.kept_off)])
        for line in sorted(lines - said):
            click.echo(line, err=True)
        said.clear()
        said.update(lines)
        for deployed in done:
            if deployed.outcome != "unchanged" or not watch:
                click.echo(f"{deployed.name}: {deployed.outcome}")

    version, cluster = _snapshot(client)
    try:
        reconcile(cluster)
    except docker.errors.APIError as err:
        raise click.ClickException(f"{docker_url}: {err.explanation or err}") from None
    if not watch:
        return
    if acme is not None:  # the swarm's one issuer: this command runs as one replica on a manager
        from ..l7.acme_deploy import DeployIssuers
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        latest["cluster"] = cluster
        issuers = DeployIssuers(acme, settings, services, credentials.token.encode(),
                                lambda: reconcile(latest["cluster"]), stack_labels, _lease_holder())
    if listen is not None:
        from ..daemon.http import HttpService
        try:
            routes = {("GET", "/healthz"): health.healthz}
            if issuers is not None:  # /acme, /metrics; failing hosts on /healthz
                from ..l7.acme_deploy import routes as issuer_routes
                routes.update(issuer_routes(issuers.document, health, issuers.state))
            HttpService(listen, routes, None).start()
        except OSError as err:
            raise click.ClickException(f"--listen {listen[0]}:{listen[1]}: {err}") from None

    def run(stop: threading.Event, notifier) -> None:
        nonlocal version, cluster
        from .. import snapshot
        if issuers is not None:
            threading.Thread(target=issuers.run, args=(stop, lambda: latest["cluster"]), daemon=True,
                             name="acme-issuer").start()
        notifier.ready()
        while not stop.is_set():
            try:
                got = client.follow(version, 10.0)
                if got is not None:
                    cluster = latest["cluster"] = snapshot.from_dict(got[1])
                    version = got[0]  # a failed update is tried again: the last cluster is reconciled each turn
                reconcile(cluster)  # also every 10 s without a change: a stuck rolling update is named
            except (ControllerError, snapshot.SnapshotError, docker.errors.APIError, OSError) as err:
                click.echo(f"l7 deploy: {err}; retrying", err=True)
                health.failed(str(err))
                stop.wait(2.0)
        if issuers is not None:
            issuers.release()
    _run_until_signalled(run)


def _lease_holder() -> str:
    """This l7 deploy's name in the ACME issuer lease: its Swarm task (INGRESSMESH_TASK_ID, as the
    stack sets it) or host, and a part no other process shares."""
    import uuid
    return f"{os.environ.get('INGRESSMESH_TASK_ID') or socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


@l7_group.command("status")
@config_option
@docker_option
@click.option("--json", "as_json", is_flag=True)
def status_command(config_path, docker_url, as_json) -> None:
    """Each proxy service: replicas, running tasks, networks, published port."""
    import docker
    api = docker.APIClient(base_url=docker_url, version="auto", timeout=30)
    result = {}
    from ..l7.deployer import update_problem
    from ..l7.proxy_service import ProxyServices
    services = ProxyServices(api, "")
    for item in _settings(config_path):
        found = [s for s in api.services(filters={"name": item.name}) if s["Spec"]["Name"] == item.name]
        if not found:
            result[item.name] = {"deployed": False}
            continue
        spec = found[0]["Spec"]
        tasks = api.tasks(filters={"service": item.name, "desired-state": "running"})
        update = found[0].get("UpdateStatus") or {}
        result[item.name] = {
            "deployed": True, "service_cluster": item.service_cluster,
            "replicas": spec["Mode"].get("Replicated", {}).get("Replicas"),
            "running": sum(1 for t in tasks if t["Status"]["State"] == "running"),
            "networks": [n["Target"][:12] for n in spec["TaskTemplate"].get("Networks") or []],
            "ports": [f"{p['PublishedPort']}/{p['PublishMode']}" for p in spec.get("EndpointSpec", {}).get("Ports", [])],
            "update_order": (spec.get("UpdateConfig") or {}).get("Order", ""), "update": update.get("State", "none"),
            "stuck": update_problem(services, item)}
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for name, info in result.items():
        click.echo(f"{name}: " + (", ".join(f"{k}={v}" for k, v in info.items() if k != "deployed")
                                  if info["deployed"] else "not deployed"))


@l7_group.command("remove")
@config_option
@docker_option
def remove_command(config_path, docker_url) -> None:
    """Remove the proxy services."""
    import docker
    from ..l7.proxy_service import ProxyServices
    services = ProxyServices(docker.APIClient(base_url=docker_url, version="auto", timeout=30), "")
    for item in _settings(config_path):
        click.echo(f"{item.name}: {'removed' if services.remove(item.name) else 'not deployed'}")


@l7_group.command("state")
@click.option("--workdir", default="/run/ingressmesh-proxy", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def state_command(workdir, as_json) -> None:
    """(Inside a proxy task) the routes and servers as the running HAProxy serves them."""
    from ..l7 import runtime
    from ..l7.show import rows
    from ..l7.state import with_live_state
    try:
        with open(os.path.join(workdir, "state.json"), encoding="utf-8") as handle:
            document = json.load(handle)
        document = with_live_state(document)
    except (OSError, ValueError, runtime.RuntimeApiError) as err:
        raise click.ClickException(f"no proxy state in {workdir}: {err}") from None
    if as_json:
        click.echo(json.dumps(document))
        return
    _print_rows({"this proxy": document})


def _print_rows(states: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from ..l7.show import rows
    console = Console(width=None if sys.stdout.isatty() else 160)
    if not states:
        console.print("no proxy task runs on this node")
    for name, document in states.items():
        if "error" in document:
            console.print(f"[bold]{name}[/]: [red]{document['error']}[/]")
            continue
        console.print(f"[bold]{name}[/] (snapshot {document['snapshot_version']}, config generation "
                      f"{document['config_generation']}, reloads {document['reloads']})", soft_wrap=True)
        table = Table()
        for column in ("route", "service", "task", "node", "address", "health", "state"):
            table.add_column(column)
        for line in rows(document):
            state = line["state"] if line["state"] == "active" else f"[yellow]{line['state']}[/]"
            table.add_row(line["route"], line["service"], line["task"], line["node"], line["address"],
                          line["health"], state)
        console.print(table)
        for refusal in document.get("refused", ()):
            console.print(f"[red]refused[/] {refusal['service']}: {refusal['reason']}", soft_wrap=True)
        for refusal in document.get("refused_objects", ()):  # the controller's (L4): no VIP and no route
            console.print(f"[red]refused by the controller[/] {refusal}", soft_wrap=True)
        for note in document.get("notes", ()):  # e.g. a stack-prefixed com.docker.lb.network, a waiting service
            console.print(f"[yellow]note[/] {note}", soft_wrap=True)
        for failure in document.get("backend_tls_failures", ()):
            console.print(f"[red]backend TLS[/] {failure['service']}: task {failure['task']}: {failure['reason']}",
                          soft_wrap=True)
        for cert in document.get("certificates", ()):  # per TLS host: secret or acme, and its expiry
            expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(cert["not_after"])) if cert["not_after"] else "?"
            console.print(f"certificate {cert['host']}: {cert['source']} ({cert['ssl_cert']}), expires {expires}",
                          soft_wrap=True)


def show_l7(docker_url: str, as_json: bool, acme_issuer=None) -> None:
    import docker
    from ..l7.show import proxy_states
    try:
        states = proxy_states(docker.APIClient(base_url=docker_url, version="auto", timeout=30))
    except docker.errors.DockerException as err:
        raise click.ClickException(f"{docker_url}: {err}") from None
    if as_json:
        from ..l7.acme_status import fetch
        click.echo(json.dumps({**states, "acme issuer": fetch(acme_issuer)} if acme_issuer else states, indent=2))
    else:
        _print_rows(states)
        from ..l7.acme_status import issuer_lines
        for line in issuer_lines(states, acme_issuer):
            click.echo(line)
