"""`ingressmesh controller` and `ingressmesh agent`: the long-running processes (systemd units)."""
from __future__ import annotations

import logging
import signal
import threading

import click

from .dataplane import backends
from .daemon.sdnotify import Notifier
from .daemon.token import TokenError, load_token


def _listen(ctx, param, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        return host or "0.0.0.0", int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected HOST:PORT") from None


def _token(path: str) -> str:
    try:
        return load_token(path)
    except TokenError as err:
        raise click.ClickException(str(err)) from None


def _run_until_signalled(run) -> None:
    """Run `run(stop, notifier)`; SIGTERM/SIGINT set `stop` so it can leave the kernel state as is."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run(stop, Notifier())


token_option = click.option("--token-file", default="/etc/ingressmesh/token", show_default=True,
                            help="Shared token file (a Docker secret in production: /run/secrets/…).")
docker_option = click.option("--docker", "docker_url", default="unix:///var/run/docker.sock", show_default=True,
                             help="This node's dockerd.")


@click.command("controller")
@docker_option
@token_option
@click.option("--listen", default="0.0.0.0:9401", show_default=True, callback=_listen, help="HOST:PORT to serve on.")
def controller_command(docker_url: str, token_file: str, listen) -> None:
    """Merge the swarm (this manager's API) with the agents' reports; serve snapshots to agents."""
    from .controller.app import Controller, ControllerConfig
    token = _token(token_file)
    try:
        controller = Controller(ControllerConfig(docker_url=docker_url, listen=listen), token)
    except OSError as err:
        raise click.ClickException(f"cannot listen on {listen[0]}:{listen[1]}: {err.strerror or err}") from None
    _run_until_signalled(controller.run)


@click.command("agent")
@click.option("--controller", "controllers", multiple=True, required=True,
              help="Controller URL, http://HOST:PORT (repeat for fail-over).")
@docker_option
@token_option
@click.option("--exec-root", default="/run/docker", show_default=True, help="dockerd's --exec-root.")
@click.option("--docker-pidfile", default="",
              help="dockerd's pidfile, when dockerd runs in its own mount namespace (then Docker's "
                   "namespaces are reached through /proc/<pid>/root).")
@click.option("--backend", type=click.Choice(backends.CHOICES), default="auto", show_default=True)
@click.option("--listen", default="0.0.0.0:9402", show_default=True, callback=_listen,
              help="HOST:PORT for /healthz and /metrics.")
@click.option("--drain-grace", default=10.0, show_default=True,
              help="Seconds an ineligible task keeps its established connections.")
@click.option("--no-forward-accept", is_flag=True,
              help="Do not add the FORWARD accepts for published ports (another firewall does it).")
@click.option("--node-id", default="", help="Swarm node id (default: asked from the local dockerd).")
def agent_command(controllers, docker_url, token_file, exec_root, docker_pidfile, backend, listen,
                  drain_grace, no_forward_accept, node_id) -> None:
    """Follow the controller and program this node's routing mesh in Docker's namespaces."""
    from .agent.app import Agent, AgentConfig, local_node_id
    from .agent.docker_layout import DockerNamespaces
    token = _token(token_file)
    try:
        node_id = node_id or local_node_id(docker_url)
    except Exception as err:  # noqa: BLE001 - any docker failure: say which daemon and why
        raise click.ClickException(f"cannot learn this node's swarm id from {docker_url}: {err}") from None
    config = AgentConfig(controllers=tuple(controllers), docker_url=docker_url,
                         namespaces=DockerNamespaces(exec_root, docker_pidfile), backend=backend, listen=listen,
                         drain_grace=drain_grace, open_forward=not no_forward_accept)
    try:
        agent = Agent(config, token, node_id)
    except OSError as err:
        raise click.ClickException(f"cannot listen on {listen[0]}:{listen[1]}: {err.strerror or err}") from None
    _run_until_signalled(agent.run)
