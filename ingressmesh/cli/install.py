"""`ingressmesh install --stack`: the whole mesh on a swarm, from one manager, in one command."""
from __future__ import annotations

import os

import click

from ..daemon.token import TokenError


@click.command("install")
@click.option("--stack", "as_stack", is_flag=True, required=True,
              help="Deploy ingressmesh as a swarm stack (the other way is systemd: scripts/install-systemd.sh "
                   "on every node).")
@click.option("--name", default="ingressmesh", show_default=True, help="The stack's name.")
@click.option("--host", "docker_host", default="", help="The manager's Docker host (docker -H); default: docker's own.")
@click.option("--image", default="ingressmesh/proxy:latest", show_default=True,
              help="The ingressmesh image (docker/proxy/Dockerfile), on every node or in a registry.")
@click.option("--backend", type=click.Choice(("auto", "nftables", "ipvs")), default="auto", show_default=True)
@click.option("--on-stop", type=click.Choice(("handover", "keep")), default="handover", show_default=True,
              help="What an agent does with its rules when stopped: `keep` leaves them through `docker stack rm`.")
@click.option("--source-ip", type=click.Choice(("snat", "preserve")), default="snat", show_default=True,
              help="Every agent's --source-ip: the default for published ports of services without the label "
                   "io.ingressmesh.lb.source_ip.")
@click.option("--token-file", default="/etc/ingressmesh/token", show_default=True,
              help="The cluster secret, made here if missing, and the Docker secret made from it if missing.")
@click.option("--docker-sock", default="/var/run/docker.sock", show_default=True,
              help="The Docker socket's path on the nodes (Swarm templates allowed).")
@click.option("--exec-root", default="/run/docker", show_default=True,
              help="dockerd's --exec-root on the nodes (Swarm templates allowed).")
@click.option("--l7-config", default=None, type=click.Path(exists=True, dir_okay=False),
              help="An l7.toml (Interlock-style proxy services): the L7 layer joins the stack (ingressmesh-l7.yml).")
@click.option("--tls", "tls", is_flag=True,
              help="https between agents and controllers: a CA and a controller certificate naming every manager, "
                   "kept in --tls-dir (made if missing), shipped as Docker secrets (ingressmesh-tls.yml).")
@click.option("--tls-dir", default="/etc/ingressmesh/tls", show_default=True,
              help="Where --tls keeps the CA (and its key: it never leaves this manager) and the certificate.")
@click.option("--resolve-image", type=click.Choice(("always", "changed", "never")), default="always",
              show_default=True, help="`never` where no registry holds the image.")
def install_command(as_stack, name, docker_host, image, backend, on_stop, source_ip, token_file, docker_sock, exec_root,
                    l7_config, tls, tls_dir, resolve_image) -> None:
    """Install ingressmesh on this swarm: `docker stack deploy` of ingressmesh-stack.yml."""
    from ..stack import (SECRET, StackError, StackSettings, cluster_token, deploy, ensure_secret, ensure_tls_secrets,
                         secret_digest)
    docker = ["docker", "-H", docker_host] if docker_host else ["docker"]
    settings = StackSettings(name=name, image=image, backend=backend, on_stop=on_stop, source_ip=source_ip,
                             docker_sock=docker_sock,
                             exec_root=exec_root, resolve_image=resolve_image, l7_config=l7_config or "",
                             tls_dir=tls_dir if tls else "")
    try:
        settings.check()
        if secret_digest(docker) is not None and not os.path.exists(token_file):
            raise StackError(f"the Docker secret {SECRET} exists but {token_file} does not: copy the token file from "
                             "the manager that installed the stack (Docker never gives a secret back)")
        token, made = cluster_token(token_file)
        if made:
            click.echo(f"made the cluster secret in {token_file} (0600)")
        if ensure_secret(docker, token, token_file):
            click.echo(f"made the Docker secret {SECRET} from {token_file}")
        if settings.tls_dir:
            for name in ensure_tls_secrets(docker, settings):
                click.echo(f"made the Docker secret {name} from {tls_dir}")
        click.echo(deploy(docker, settings).rstrip())
    except (StackError, TokenError, OSError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"deployed {' + '.join(settings.files())} as stack {name}: `docker stack ps {name}`; "
               f"`docker stack rm {name}` removes it and its rules")
