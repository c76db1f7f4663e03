"""`ingressmesh controller` and `ingressmesh agent`: the long-running processes (systemd units)."""
from __future__ import annotations

import logging
import signal
import threading

import click

from ..dataplane import backends
from ..daemon.sdnotify import Notifier
from ..daemon.token import TokenError, load_token


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


def _cluster_secret(token_file: str) -> str:
    from ..daemon.credentials import is_derived
    secret = _token(token_file)
    if is_derived(secret):
        raise click.ClickException(f"token file {token_file} holds a derived credential, not the cluster secret "
                                   "it was made from")
    return secret


def _stop_on_signals() -> threading.Event:
    """Logging set up, and an event SIGTERM/SIGINT set (so the kernel state is left as the command says)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    # Set from a short-lived thread: a handler runs in the main thread between two bytecodes, maybe
    # while that thread holds the Event's own lock (inside stop.wait/stop.set), and Event.set there
    # would wait for it forever (a second SIGTERM hung the agent until SIGKILL).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: threading.Thread(target=stop.set, name="stop", daemon=True).start())
    return stop


def _run_until_signalled(run) -> None:
    """Run `run(stop, notifier)` until SIGTERM/SIGINT."""
    run(_stop_on_signals(), Notifier())


token_option = click.option("--token-file", default="/etc/ingressmesh/token", show_default=True,
                            help="Token file: the cluster secret, or a credential from `ingressmesh token` "
                                 "(a Docker secret in production: /run/secrets/…).")


def tls_client_options(command):
    """--ca and --tls-verify: how a client of the controller checks its https certificate."""
    command = click.option("--tls-verify/--no-tls-verify", default=True, show_default=True,
                           help="Check the controller's certificate on https:// URLs.")(command)
    return click.option("--ca", "ca_file", default=None, metavar="FILE", type=click.Path(exists=True, dir_okay=False),
                        envvar="INGRESSMESH_CA",
                        help="CA certificate (PEM) that signed the controller's certificate "
                             "[default: the system's CAs].")(command)


def _credentials(token_file: str, ca_file, tls_verify: bool):
    from ..agent.controller_client import Credentials
    return Credentials(_token(token_file), verify=(ca_file or True) if tls_verify else False)


def _server_tls(cert: str, key: str):
    from ..daemon.tls import TlsError, server_context
    if bool(cert) != bool(key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if not cert:
        return None
    try:
        return server_context(cert, key)
    except TlsError as err:
        raise click.ClickException(str(err)) from None


docker_option = click.option("--docker", "docker_url", default="unix:///var/run/docker.sock", show_default=True,
                             help="This node's dockerd.")


@click.command("controller")
@docker_option
@token_option
@click.option("--listen", default="0.0.0.0:9401", show_default=True, callback=_listen, help="HOST:PORT to serve on.")
@click.option("--tls-cert", default="", envvar="INGRESSMESH_TLS_CERT",
              help="Serve https with this certificate chain (PEM; a Docker secret in production).")
@click.option("--tls-key", default="", envvar="INGRESSMESH_TLS_KEY", help="The private key of --tls-cert (PEM).")
def controller_command(docker_url: str, token_file: str, listen, tls_cert: str, tls_key: str) -> None:
    """Merge the swarm (this manager's API) with the agents' reports; serve snapshots to agents."""
    from ..controller.app import Controller, ControllerConfig
    token = _cluster_secret(token_file)
    tls = _server_tls(tls_cert, tls_key)
    try:
        controller = Controller(ControllerConfig(docker_url=docker_url, listen=listen), token, tls=tls)
    except OSError as err:
        raise click.ClickException(f"cannot listen on {listen[0]}:{listen[1]}: {err.strerror or err}") from None
    _run_until_signalled(controller.run)


@click.command("agent")
@click.option("--controller", "controllers", multiple=True,
              help="Controller URL, http(s)://HOST:PORT (repeat for fail-over).  Default: a controller on "
                   "every swarm manager, http://MANAGER:--controller-port, the managers from `docker info`.")
@click.option("--controller-port", default=9401, show_default=True, type=click.IntRange(1, 65535),
              help="The controllers' port when they are found from the swarm's managers.")
@docker_option
@token_option
@tls_client_options
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
@click.option("--no-fast-path", is_flag=True,
              help="Do not DNAT VIPs in the local containers' own namespaces: every VIP connection goes "
                   "through the network's LB namespace and is SNATed, as with Docker.")
@click.option("--fast-path-max-containers", default=None, type=click.IntRange(0, 100000),
              help="At most this many containers get the fast path, the longest-known first; the others "
                   "use the LB namespace until a place frees up.  Default: no limit (a change costs well "
                   "under a millisecond per container namespace, bench/fast_path_fanout.py).")
@click.option("--source-ip", type=click.Choice(("snat", "preserve")), default="snat", show_default=True,
              envvar="INGRESSMESH_SOURCE_IP",
              help="For published ports of services without the label io.ingressmesh.lb.source_ip: snat (as Docker: "
                   "tasks see the ingress namespace's address) or preserve (tasks see the client's own address).  "
                   "The label, either value, wins per service.  Set it alike on every node.")
@click.option("--node-id", default="", envvar="INGRESSMESH_NODE_ID",
              help="Swarm node id (default: asked from the local dockerd; the stack sets it from {{.Node.ID}}).")
@click.option("--on-stop", type=click.Choice(("keep", "cleanup", "handover")), default="keep", show_default=True,
              help="On SIGTERM: keep the rules (systemd restarts and upgrades), remove every table ingressmesh "
                   "made on this node, or remove them unless a newer agent of this node waits for them "
                   "(the swarm stack: `docker stack rm` cleans, a start-first update hands over).")
@click.option("--lease-dir", default="",
              help="A directory every agent of this node shares (a host directory or a per-node volume): an agent "
                   "waits there for older ones to stop before it writes the kernel.  Needed by --on-stop handover.")
@click.option("--ready-file", default="",
              help="Written once this agent holds its lease: the stack's health check tests it, so a start-first "
                   "update stops the old agent only when the new one is there to take over.")
@click.option("--drained-resident", default="", envvar="INGRESSMESH_DRAINED_RESIDENT", metavar="NAME",
              help="For the swarm stack's agent task: stopped on a drained node, hand the rules to a plain "
                   "container NAME that Swarm leaves running (agent/drained.py); started, retire it first.")
@click.option("--task-id", default="", envvar="INGRESSMESH_TASK_ID",
              help="This agent's swarm task id (the stack sets it from {{.Task.ID}}): finds its own container.")
def agent_command(controllers, controller_port, docker_url, token_file, ca_file, tls_verify, exec_root,
                  docker_pidfile, backend, listen, drain_grace, no_forward_accept, no_fast_path,
                  fast_path_max_containers, source_ip, node_id, on_stop, lease_dir, ready_file, drained_resident,
                  task_id) -> None:
    """Follow the controller and program this node's routing mesh in Docker's namespaces."""
    from ..agent.app import Agent, AgentConfig, local_node_id, manager_controllers
    from ..agent.docker_layout import DockerNamespaces
    from ..agent.leaving import leave_before_taking_over, leave_node
    from ..agent.node_lease import LeaseError, NodeLease
    from ..agent.writable_sysctls import ensure_writable_sysctls
    from ..daemon.credentials import READER, credential_node
    stop = _stop_on_signals()
    lease = None
    if on_stop == "handover" and not lease_dir:
        raise click.ClickException("--on-stop handover needs --lease-dir (where the agents of this node meet)")
    if drained_resident and (on_stop != "handover" or not task_id):
        raise click.ClickException("--drained-resident is for the stack's agent task: it needs --on-stop handover "
                                   "and --task-id")
    if lease_dir:  # first thing: a start-first update stops the old agent once this one holds its lease
        try:
            lease = NodeLease(lease_dir).take()
            if ready_file:
                with open(ready_file, "w", encoding="ascii") as handle:
                    handle.write(lease.name + "\n")
        except (LeaseError, OSError) as err:
            raise click.ClickException(f"{err}" if isinstance(err, LeaseError) else
                                       f"--ready-file {ready_file}: {err.strerror or err}") from None
    token = _credentials(token_file, ca_file, tls_verify)
    if token.token.startswith(READER + ":"):
        raise click.ClickException(f"token file {token_file} holds the read-only credential: an agent reports, "
                                   "give it its node's (`ingressmesh token node --node-id ID`)")
    try:
        node_id = node_id or local_node_id(docker_url)
    except Exception as err:  # noqa: BLE001 - any docker failure: say which daemon and why
        raise click.ClickException(f"cannot learn this node's swarm id from {docker_url}: {err}") from None
    owner = credential_node(token.token)
    if owner is not None and owner != node_id:
        raise click.ClickException(f"token file {token_file} is the credential of node {owner}, but this node "
                                   f"is {node_id}: make its own with `ingressmesh token node --node-id {node_id}`")
    token = _node_scoped(token, token_file, node_id)
    if not controllers:
        try:
            controllers = manager_controllers(docker_url, controller_port, ca_file is not None)
        except Exception as err:  # noqa: BLE001 - any docker failure: say which daemon and why
            raise click.ClickException(f"no --controller given, and the swarm's managers cannot be learnt "
                                       f"from {docker_url}: {err}") from None
    namespaces = DockerNamespaces(exec_root, docker_pidfile)
    config = AgentConfig(controllers=tuple(controllers), docker_url=docker_url, namespaces=namespaces,
                         backend=backend, listen=listen, drain_grace=drain_grace, open_forward=not no_forward_accept,
                         fast_path=not no_fast_path, fast_path_max_containers=fast_path_max_containers,
                         source_ip=source_ip)
    problem = ensure_writable_sysctls()
    if problem:
        logging.getLogger("ingressmesh.agent").warning("%s", problem)  # namespaces whose sysctl is off will say so
    resident = _drained_resident(drained_resident, task_id, docker_url, token, node_id, ca_file)
    if resident is not None:
        try:  # a resident that ran while this node was drained leaves its rules to this task
            resident.retire()
        except Exception as err:  # noqa: BLE001 - say it; the lease wait below still orders the two
            logging.getLogger("ingressmesh.agent").error("cannot retire the resident agent: %s", err)
    if lease is not None and not lease.wait_for_older(stop):
        try:  # stopped before it touched the kernel; the older agent may hand its rules to us as it goes
            logging.getLogger("ingressmesh.agent").info(
                "stopped while waiting: rules %s (--on-stop %s)",
                leave_before_taking_over(on_stop, lease, namespaces, backend), on_stop)
        finally:
            lease.release()
        return
    try:
        agent = Agent(config, token, node_id)
    except OSError as err:
        raise click.ClickException(f"cannot listen on {listen[0]}:{listen[1]}: {err.strerror or err}") from None
    drain: list = []  # the drain check's outcome, when the rules went (or stay) for a resident
    run_until = stop
    if resident is not None:  # the agent follows and applies on while the drain check runs
        run_until = threading.Event()
        threading.Thread(target=_stop_after_drain_check, args=(stop, run_until, drain, resident, agent, lease,
                                                               config, token, node_id), name="drain", daemon=True).start()

    def leave() -> None:
        logging.getLogger("ingressmesh.agent").info(
            "stopped: rules %s (--on-stop %s)", drain[0] if drain and drain[0] else
            leave_node(on_stop, lease, namespaces, backend), on_stop)

    try:
        agent.run(run_until, Notifier(), leave)
    finally:
        if lease is not None:
            lease.release()


def _node_scoped(token, token_file: str, node_id: str):
    """The agent speaks for its own node only: given the cluster secret, it keeps the node's
    credential derived from it and, in a container, covers the secret's file (bootstrap_secret.py)."""
    import dataclasses
    from ..agent.bootstrap_secret import hide_secret_file, node_scoped
    credential, derived = node_scoped(token.token, node_id)
    if not derived:
        return token
    problem = hide_secret_file(token_file)
    logging.getLogger("ingressmesh.agent").info(
        "token file %s holds the cluster secret: using node %s's credential derived from it%s", token_file, node_id,
        f" ({problem})" if problem else "")
    return dataclasses.replace(token, token=credential)


def _drained_resident(name: str, task_id: str, docker_url: str, token, node_id: str, ca_file):
    """The stack agent task's drain hand-over (agent/drained.py), with this node's own credential."""
    if not name:
        return None
    from ..agent.drained import DrainedResident
    from ..daemon.credentials import credential_node, node_credential
    credential = token.token if credential_node(token.token) else node_credential(token.token, node_id)
    return DrainedResident(name, task_id, docker_url, credential, ca_file)


def _stop_after_drain_check(signalled, run_until, drain: list, resident, agent, lease, config, token,
                            node_id: str) -> None:
    """On SIGTERM, first the drain check (agent/drained.py: up to 5 s, then the resident's start)
    while the agent keeps applying (this node's own tasks are stopping too), then stop the agent."""
    from ..agent.controller_client import ControllerClient
    from ..agent.drained import known_availability
    signalled.wait()
    client = None
    try:
        client = ControllerClient(list(config.controllers), token)
        drain.append(resident.leave(lease, client, node_id, known_availability(agent.follower, node_id)))
    except Exception as err:  # noqa: BLE001 - never skip the stop policy because of this
        logging.getLogger("ingressmesh.agent").error("drain check failed (%s): the stop policy decides", err)
    finally:
        if client is not None:
            client.close()
        run_until.set()


@click.group("token")
def token_group() -> None:
    """Credentials derived from the cluster secret (run on a manager, which holds it)."""


def _emit(credential: str, out: str) -> None:
    if not out:
        click.echo(credential)
        return
    from ..daemon.token import write_token
    try:
        write_token(out, credential)
    except OSError as err:
        raise click.ClickException(f"{out}: {err.strerror or err}") from None


cluster_token_option = click.option("--token-file", default="/etc/ingressmesh/token", show_default=True,
                                    help="The cluster secret.")
out_option = click.option("--out", default="", help="Write it to this new file (mode 0600) instead of stdout.")


@token_group.command("node")
@click.option("--node-id", required=True, help="The swarm node id (docker info -f '{{.Swarm.NodeID}}').")
@cluster_token_option
@out_option
def token_node_command(node_id: str, token_file: str, out: str) -> None:
    """The credential of one node's agent: the snapshot, and reports about that node only."""
    from ..daemon.credentials import node_credential
    try:
        credential = node_credential(_cluster_secret(token_file), node_id)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--node-id") from None
    _emit(credential, out)


@token_group.command("reader")
@cluster_token_option
@out_option
def token_reader_command(token_file: str, out: str) -> None:
    """The read-only credential (L7 proxies, `l7 deploy`, the CLI): the snapshot only."""
    from ..daemon.credentials import reader_credential
    _emit(reader_credential(_cluster_secret(token_file)), out)
