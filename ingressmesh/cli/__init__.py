"""The `ingressmesh` command line: plan, apply, show, doctor, cleanup."""
from __future__ import annotations

import json
import sys
import time
from typing import Optional

import click
from rich.console import Console
from rich.table import Table

from .. import plan as planner
from ..dataplane import backends
from .. import snapshot
from ..dataplane.apply import NodeApplier
from ..doctor import doctor_command
from ..dataplane.layout import Layout
from ..netns import Netns, NetnsError
from ..ipvs.kernel import IpvsError
from ..nft.errors import NftError
from ..dataplane.scan import namespaces_with_tables


def _load_plan(cluster_file: Optional[str], node: str, grace: float, controller: Optional[str] = None,
               token_file: str = "") -> planner.NodePlan:
    """The node's plan from a snapshot file, or from the live controller's snapshot."""
    if controller:
        from . import live
        try:
            _, cluster, _ = live.fetch_snapshot(controller, token_file)
        except ValueError as err:
            raise click.ClickException(str(err)) from None
        source = controller
    elif cluster_file:
        try:
            cluster = snapshot.load(cluster_file)
        except snapshot.SnapshotError as err:
            raise click.ClickException(f"bad cluster file: {err}") from None
        source = cluster_file
    else:
        raise click.UsageError("give --cluster FILE or --controller URL")
    if cluster.node(node) is None:
        matches = [n.id for n in cluster.nodes if n.hostname == node]
        if len(matches) != 1:
            known = ", ".join(f"{n.id} ({n.hostname})" for n in cluster.nodes) or "none"
            raise click.ClickException(f"--node {node!r} is not in {source} (nodes: {known})")
        node = matches[0]
    return planner.plan_node(cluster, node, planner.PlanOptions(now=time.time(), drain_grace=grace))


_cluster_options = (
    click.option("--cluster", "cluster_file", default=None, type=click.Path(dir_okay=False),
                 help="Cluster snapshot (JSON)."),
    click.option("--node", required=True, help="Node id (or hostname) to plan for."),
    click.option("--drain-grace", default=10.0, show_default=True,
                 help="Seconds an ineligible task keeps its established connections."),
)


backend_option = click.option(
    "--backend", type=click.Choice(backends.CHOICES), default="auto", show_default=True,
    help="Data plane: IPVS + fwmarks where the kernel has IPVS (auto), or nftables.")


def _parse_timeouts(ctx, param, value: str):
    from ..ipvs.backend import IpvsTimeouts
    try:
        tcp, tcpfin, udp = (int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected three whole seconds, TCP,FIN,UDP") from None
    if min(tcp, tcpfin, udp) < 1:
        raise click.BadParameter(f"{value!r}: every timeout must be at least 1 s")
    return IpvsTimeouts(tcp, tcpfin, udp)


def cluster_options(func):
    """The options every command that reads a cluster snapshot shares."""
    for option in reversed(_cluster_options):
        func = option(func)
    return func


@click.group()
@click.version_option(package_name="ingressmesh")
def main() -> None:
    """ingressmesh: an open routing mesh for Docker Swarm."""


@main.command("plan")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--controller", default=None, help="Plan from the live controller's snapshot (instead of --cluster).")
@click.option("--token-file", default="/etc/ingressmesh/token", show_default=True)
def plan_command(cluster_file, node: str, drain_grace: float, as_json: bool, controller, token_file) -> None:
    """Print the data plane this node should have (no kernel access)."""
    node_plan = _load_plan(cluster_file, node, drain_grace, controller, token_file)
    if as_json:
        click.echo(json.dumps(planner.to_dict(node_plan), indent=2, sort_keys=True))
        return
    console = Console()
    for warning in node_plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for ns in node_plan.namespaces:
        title = f"{ns.key}" + (f" ({ns.network_name})" if ns.network_name else "")
        table = Table(title=title, title_justify="left")
        for column in ("service", "front-end", "backends"):
            table.add_column(column)
        for vip in ns.vips:
            table.add_row(vip.service, f"{vip.vip} (all ports)", _backend_text(vip.backends))
        for port in ns.ports:
            target = f"→ {ns.forward_to}" if ns.role == "host" else _backend_text(port.backends)
            table.add_row(port.service, f"{port.protocol}/{port.port}", target)
        console.print(table)


def _backend_text(backends) -> str:
    if not backends:
        return "[red]none: refused[/]"
    return ", ".join(f"{b.address}{':' + str(b.port) if b.port else ''}"
                     + ("" if b.state == "active" else f" [yellow]({b.state})[/]") for b in backends)


@main.command("apply")
@cluster_options
@click.option("--host-netns", default="", help="Host namespace (name or path; default: this one).")
@click.option("--ingress-netns", default=Layout.ingress, show_default=True,
              help="Ingress namespace (name or path).")
@click.option("--lb-netns", default=Layout.lb, show_default=True,
              help="Load-balancer namespace per network; fields {network_id} {network_name}.")
@backend_option
@click.option("--ipvs-timeouts", default="86400,120,300", show_default=True, callback=_parse_timeouts,
              help="IPVS TCP idle, TCP FIN and UDP timeouts in seconds (ipvs backend).")
def apply_command(cluster_file: str, node: str, drain_grace: float, host_netns: str,
                  ingress_netns: str, lb_netns: str, backend: str, ipvs_timeouts) -> None:
    """Program this node's namespaces from a cluster snapshot."""
    node_plan = _load_plan(cluster_file, node, drain_grace)
    for warning in node_plan.warnings:
        click.echo(f"warning: {warning}", err=True)
    try:
        lb_netns.format(network_id="x", network_name="x")
    except (KeyError, ValueError, IndexError) as err:
        raise click.ClickException(f"--lb-netns {lb_netns!r}: bad template ({err!r}); "
                                   "fields are {network_id} and {network_name}") from None
    layout = Layout(host=host_netns, ingress=ingress_netns, lb=lb_netns)
    applier = NodeApplier(layout, backends.factory(backend, ipvs_timeouts))
    report = applier.apply(node_plan)
    for key, (added, removed, full) in sorted(report.changed.items()):
        click.echo(f"{key}: {'full sync' if full else 'diff'}, +{added} -{removed} changes")
    for key, message in sorted(report.errors.items()):
        click.echo(f"error: {key}: {message}", err=True)
    if not report.ok:
        sys.exit(1)


@main.command("show")
@click.option("--netns", "netns_ref", default=None,
              help="Namespace (name or path); default: every namespace with an ingressmesh table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@backend_option
@click.option("--exec-root", default=None,
              help="On a swarm node: dockerd's --exec-root; shows this host, Docker's ingress_sbox "
                   "and lb_* namespaces and the containers' own (the VIP fast path, named by --docker).")
@click.option("--docker-pidfile", default="", help="dockerd's pidfile, when it runs in its own mount namespace.")
@click.option("--controller", default=None, help="Controller URL: name each backend's task, node and health.")
@click.option("--token-file", default="/etc/ingressmesh/token", show_default=True)
@click.option("--l7", "l7", is_flag=True, help="The L7 routes of this node's proxy tasks, as their HAProxy serves them.")
@click.option("--docker", "docker_url", default="unix:///var/run/docker.sock", show_default=True,
              help="This node's dockerd (for --l7, and the container names with --exec-root).")
@click.option("--acme-issuer", default=None, metavar="URL",
              help="With --l7: `l7 deploy --listen` of the ACME issuer [text: http://127.0.0.1:9404; "
                   "--json includes it only when given].")
def show_command(netns_ref, as_json: bool, backend: str, exec_root, docker_pidfile, controller, token_file,
                 l7, docker_url, acme_issuer) -> None:
    """VIP-to-task tables as programmed in the kernel (--l7: host + path -> service -> servers)."""
    from . import live
    if l7:
        from .l7 import show_l7
        show_l7(docker_url, as_json, acme_issuer)
        return
    if exec_root is not None:
        from ..agent.docker_layout import DockerNamespaces
        try:
            netns_dir = DockerNamespaces(exec_root, docker_pidfile).netns_dir()
        except (OSError, ValueError) as err:
            raise click.ClickException(f"cannot find dockerd's namespaces: {err}") from None
        containers = live.container_namespaces(netns_dir, docker_url)
        targets = [Netns("")] + [Netns(p) for p in live.docker_namespaces(netns_dir)] + [Netns(p) for p in containers]
        titles = {p: f"{p} (container {name}: VIP fast path)" for p, name in containers.items()}
    else:
        targets = [Netns.from_ref(netns_ref)] if netns_ref is not None else namespaces_with_tables()
    titles = titles if exec_root is not None else {}
    index, refused, l7_refused = {}, [], []
    if controller:
        from ..l7.show import label_refusals
        try:
            _, cluster, refused = live.fetch_snapshot(controller, token_file)
            index, l7_refused = live.task_index(cluster), label_refusals(cluster)
        except ValueError as err:
            raise click.ClickException(str(err)) from None
    result = {}
    for netns in targets:
        try:
            result[netns.path or "(host)"] = backends.factory(backend)(netns).read()
        except (NftError, IpvsError, NetnsError, OSError) as err:
            raise click.ClickException(f"cannot read {netns.path or '(host)'}: {err}") from None
    if as_json:
        shown = {ns: live.as_json(rows, index) for ns, rows in result.items()}
        if controller:  # what the controller left out: such a service has no VIP, no port, no route
            shown["(refused by the controller)"] = refused
            shown["(refused by the L7 proxies)"] = l7_refused  # their labels: no route, the VIP stays
        click.echo(json.dumps(shown, indent=2))
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    if not result:
        console.print("no ingressmesh tables found")
    for ns, rows in result.items():
        console.print(f"[bold]{titles.get(ns, ns)}[/]", soft_wrap=True)  # long: never wrapped into a title
        table = Table()
        columns = ("service", "front-end", "task", "node", "address", "health", "state")
        for column in columns:
            table.add_column(column)
        for line in live.annotated(rows, index):
            state = line["state"] if line["state"] == "active" else f"[yellow]{line['state']}[/]"
            table.add_row(line["service"], line["frontend"], line["task"], line["node"], line["address"],
                          line["health"], state)
        console.print(table)
    for message in refused:
        console.print(f"[red]refused by the controller[/] {message}", soft_wrap=True)
    for message in l7_refused:
        console.print(f"[red]refused by the L7 proxies[/] {message}", soft_wrap=True)


@main.command("cleanup")
@click.option("--netns", "netns_refs", multiple=True,
              help="Namespace to clean (repeatable); default: every namespace with a table.")
@backend_option
def cleanup_command(netns_refs, backend: str) -> None:
    """Remove every table (and IPVS service) ingressmesh created, and nothing else."""
    targets = [Netns.from_ref(ref) for ref in netns_refs] if netns_refs else namespaces_with_tables()
    failed = False
    for netns in targets:
        try:
            backends.factory(backend)(netns).cleanup()
        except (NftError, IpvsError, NetnsError, OSError) as err:
            click.echo(f"error: {err}", err=True)
            failed = True
            continue
        click.echo(f"removed ingressmesh table in {netns.path or '(host)'}")
    if failed:
        sys.exit(1)


main.add_command(doctor_command)


def _register_daemons() -> None:
    from .daemons import agent_command, controller_command, token_group
    from .install import install_command
    from .lab import lab_group
    main.add_command(install_command)
    main.add_command(controller_command)
    main.add_command(agent_command)
    main.add_command(token_group)
    main.add_command(lab_group)
    from .l7 import l7_group, proxy_command
    main.add_command(proxy_command)
    main.add_command(l7_group)
    from .docker_filter import docker_filter_command
    main.add_command(docker_filter_command)


_register_daemons()

from .examples import add_examples  # noqa: E402  (after every command is registered)

add_examples(main)
