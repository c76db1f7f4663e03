"""`ingressmesh lab up|down|status|exec|docker`: the multi-node swarm lab from the shell."""
from __future__ import annotations

import json
import os
import sys

import click

from ..lab.config import LabConfig
from ..lab.lab import Lab, LabError

_dir_option = click.option("--lab-dir", default=LabConfig.lab_dir, show_default=True,
                           help="Where node data, sockets and the state file live.")


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


@click.group("lab")
def lab_group() -> None:
    """A real N-node Docker Swarm in network namespaces on this machine (root)."""


@lab_group.command("up")
@_dir_option
@click.option("--nodes", default=3, show_default=True, help="Number of nodes.")
@click.option("--managers", default=1, show_default=True, help="node1..nodeN are managers.")
@click.option("--prefix", default=LabConfig.prefix, show_default=True,
              help="Prefix of netns and cgroup names.")
@click.option("--subnet", default=LabConfig.subnet, show_default=True,
              help="Node N is SUBNET.N/24.")
@click.option("--pool", default=LabConfig.pool, show_default=True,
              help="Swarm --default-addr-pool.")
@click.option("--images", default=",".join(LabConfig.images), show_default=True,
              help="Lab images every node has (imported into node1, its image store copied to the others, or "
                   "every node unpacks a ready store of exactly these from `lab image-store`; comma-separated; '' for none).")
def up_command(lab_dir, nodes, managers, prefix, subnet, pool, images) -> None:
    """Bring the lab up (images are built once and cached)."""
    try:
        lab = Lab(LabConfig(lab_dir=lab_dir, nodes=nodes, managers=managers, prefix=prefix,
                            subnet=subnet, pool=pool,
                            images=tuple(i for i in images.split(",") if i)), log=_echo)
        times = lab.up()
    except (LabError, ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"lab up in {max(times.values()):.1f}s")
    click.echo(lab.docker(1, "node", "ls").stdout.rstrip())


@lab_group.command("images")
@click.argument("keys", nargs=-1, required=True, type=click.Choice(["busybox", "python", "proxy"]))
def images_command(keys) -> None:
    """Build lab images into the cache without a lab (so a guest that cannot build them finds them)."""
    from ..lab import images
    try:
        for key in keys:
            click.echo(f"{key}: {images.ensure(LabConfig.image_cache, key, _echo)}")
    except (images.ImageError, OSError) as err:
        raise click.ClickException(str(err)) from None


@lab_group.command("image-store")
@click.argument("keys", nargs=-1, required=True, type=click.Choice(["busybox", "python", "proxy"]))
def image_store_command(keys) -> None:
    """Build a ready image store of these lab images into the cache: a lab whose images are
    exactly these starts every node on a copy of it instead of importing (for the QEMU guest,
    where an import costs minutes).  Uses a one-node lab of its own (prefix imstore, 10.76.0)."""
    from ..lab import store_builder
    try:
        click.echo(f"image store: {store_builder.ensure_store(keys, LabConfig.image_cache, _echo)}")
    except (RuntimeError, ValueError, OSError) as err:  # ImageError and LabError among them
        raise click.ClickException(str(err)) from None


@lab_group.command("down")
@_dir_option
@click.option("--prefix", default=LabConfig.prefix, show_default=True,
              help="Used when the state file is gone.")
@click.option("--grace", default=1.0, show_default=True,
              help="Seconds the dockerds get after SIGTERM before SIGKILL (0: kill at once).")
def down_command(lab_dir, prefix, grace) -> None:
    """Remove every namespace, process, cgroup and file of the lab (also after a crash)."""
    lab = Lab.attach(lab_dir, prefix=prefix)
    result = lab.down(grace)
    for item in result["kept"]:
        _echo(f"kept: {item}")
    click.echo(f"lab down in {result['seconds']:.1f}s")
    if result["kept"]:
        sys.exit(1)


@lab_group.command("status")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def status_command(lab_dir, as_json) -> None:
    """Nodes, dockerds and `docker node ls`; exit 1 unless the lab is fully up."""
    lab = Lab.attach(lab_dir)
    status = lab.status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
    else:
        click.echo(f"lab {lab.config.prefix}: {'up' if status['up'] else 'NOT up'} "
                   f"(phase {status['phase']})")
        for node in status["nodes"]:
            role = "manager" if node["manager"] else "worker"
            click.echo(f"  {node['node']:<7} {node['address']:<12} {role:<8} "
                       f"netns={'yes' if node['netns'] else 'no':<3} "
                       f"dockerd={node['dockerd_pid'] or '-'} "
                       f"{'answers' if node['answers'] else 'silent'}  {node['socket']}")
        click.echo(f"  client  {lab.client_address:<12} netns="
                   f"{'yes' if status['client_netns'] else 'no'}")
        for row in status["swarm"]:
            click.echo(f"  swarm: {row['Hostname']:<7} {row['Status']:<6} "
                       f"{row['Availability']:<7} {row['ManagerStatus']}")
        for key, path in status["paths"].items():
            click.echo(f"  {key}: {path}")
    sys.exit(0 if status["up"] else 1)


def _target(lab: Lab, where: str) -> str:
    if where == "client":
        return lab.client_netns()
    if where.isdigit() and int(where) in lab.config.node_numbers:
        return lab.node_netns(int(where))
    raise click.BadParameter(f"{where!r}: a node number 1..{lab.config.nodes} or 'client'")


@lab_group.command("exec", context_settings={"ignore_unknown_options": True})
@_dir_option
@click.argument("where")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(lab_dir, where, argv) -> None:
    """Run ARGV in node WHERE's (or the client's) netns, in this mount namespace.

    DOCKER_HOST is set to that node's socket (for /usr/bin/docker or the SDK)."""
    lab = Lab.attach(lab_dir)
    path = _target(lab, where)
    if not os.path.exists(path):
        raise click.ClickException(f"{path} does not exist: is the lab up?")
    env = dict(os.environ)
    if where != "client":
        env["DOCKER_HOST"] = lab.docker_socket(int(where))
    os.execvpe("nsenter", ["nsenter", f"--net={path}", "--", *argv], env)


@lab_group.command("docker", context_settings={"ignore_unknown_options": True})
@_dir_option
@click.argument("node", type=int)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def docker_command(lab_dir, node, args) -> None:
    """/usr/bin/docker against node NODE:  lab docker 1 -- service ls"""
    lab = Lab.attach(lab_dir)
    _target(lab, str(node))
    from ..lab.config import DOCKER
    os.execv(DOCKER, [DOCKER, "-H", lab.docker_socket(node), *args])


@lab_group.command("show")
@_dir_option
@click.argument("node", type=int)
@click.option("--l7", "l7", is_flag=True, help="The L7 routes of the node's proxy tasks.")
@click.option("--json", "as_json", is_flag=True)
def show_command(lab_dir, node, l7, as_json) -> None:
    """`ingressmesh show` on node NODE with its namespaces, the lab controller and token."""
    import sys
    from ..testbed.swarm_mesh import SwarmMesh
    lab = Lab.attach(lab_dir)
    path = _target(lab, str(node))
    mesh = SwarmMesh(lab)
    config = lab.config
    argv = [sys.executable, "-m", "ingressmesh", "show", "--exec-root", config.exec_root(node),
            "--docker-pidfile", config.pidfile(node), "--docker", f"unix://{config.docker_sock(node)}"]
    if os.path.exists(mesh.token_file):
        argv += ["--controller", mesh.controller_url, "--token-file", mesh.token_file]
    argv += (["--l7"] if l7 else []) + (["--json"] if as_json else [])
    os.execvp("nsenter", ["nsenter", f"--net={path}", "--", *argv])
