"""`ingressmesh docker-filter`: the Docker API filter in front of a component (the stack runs
`l7 deploy` behind it)."""
from __future__ import annotations

import asyncio
import logging
import os
import sys

import click


@click.command("docker-filter", context_settings={"ignore_unknown_options": False})
@click.option("--for", "component", type=click.Choice(["l7-deploy"]), required=True,
              help="Whose calls pass: l7-deploy = the calls `l7 deploy` makes, on l7.toml's proxy services only.")
@click.option("--config", "config_path", default="/etc/ingressmesh/l7.toml", show_default=True,
              help="l7.toml (l7-deploy: the proxy services, images and secret rules).")
@click.option("--upstream", default="/var/run/docker.sock", show_default=True, help="The real dockerd socket.")
@click.option("--listen", required=True, help="The filtered socket to make (0600, owned by --run-as).")
@click.option("--run-as", default="65534:65534", show_default=True, metavar="UID:GID",
              help="Run COMMAND as this user, which must not be able to reach --upstream.")
@click.option("--owner-service", default="", envvar="INGRESSMESH_OWNER_SERVICE",
              help="l7 deploy's own service (it may look itself up).")
@click.option("--stack-namespace", default="", envvar="INGRESSMESH_STACK_NAMESPACE",
              help="The stack l7 deploy belongs to (its secrets never reach the proxies).")
@click.option("--proxy-ca-secret", default="", envvar="INGRESSMESH_PROXY_CA_SECRET", metavar="SECRET",
              help="As `l7 deploy --proxy-ca-secret`: the controller CA secret the proxies may mount.")
@click.argument("command", nargs=-1, required=True)
def docker_filter_command(component, config_path, upstream, listen, run_as, owner_service, stack_namespace,
                          proxy_ca_secret, command) -> None:
    """Serve a filtered Docker API on --listen and run COMMAND as --run-as against it; exit with it."""
    from ..docker_filter.deployer_rules import DeployerRules
    from ..docker_filter.proxy import DockerFilter
    from ..docker_filter.run_as import RunAsError, check_unreachable, run
    from ..l7.settings import SettingsError, load, with_default_ca_secret
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        uid, gid = (int(part) for part in run_as.split(":", 1))
    except ValueError:
        raise click.BadParameter(f"{run_as!r}: UID:GID, two numbers", param_hint="--run-as") from None
    try:
        settings = with_default_ca_secret(load(config_path), proxy_ca_secret)
        check_unreachable(upstream, uid, gid)
    except (SettingsError, RunAsError, OSError) as err:
        raise click.ClickException(str(err)) from None
    rules = DeployerRules(settings, owner_service, stack_namespace)
    os.makedirs(os.path.dirname(listen) or ".", mode=0o755, exist_ok=True)

    async def main() -> int:
        served = await DockerFilter(rules, upstream, listen, (uid, gid)).start()
        try:
            code = await run(list(command), uid, gid)
        except OSError as err:
            raise click.ClickException(f"cannot run {command[0]} as {uid}:{gid}: {err}") from None
        finally:
            await served.stop()
        return code if code >= 0 else 128 - code

    sys.exit(asyncio.run(main()))
