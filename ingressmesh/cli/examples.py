"""One example per command, shown at the end of its --help (and in docs/cli.md, generated from it).

Kept apart from the commands so the help texts and the docs' CLI reference come from one place;
`tests/unit/test_cli_reference.py` fails when a command has no example or the page is stale.
"""
from __future__ import annotations

import click

EXAMPLES = {
    "ingressmesh": "ingressmesh show --exec-root /run/docker --controller http://manager-1:9401",
    "ingressmesh agent": "ingressmesh agent --controller http://manager-1:9401 --token-file /etc/ingressmesh/token",
    "ingressmesh apply": "ingressmesh apply --cluster examples/demo-cluster.json --node node1",
    "ingressmesh cleanup": "ingressmesh cleanup --netns /run/docker/netns/ingress_sbox",
    "ingressmesh controller": "ingressmesh controller --listen 0.0.0.0:9401 --token-file /etc/ingressmesh/token",
    "ingressmesh doctor": "sudo ingressmesh doctor",
    "ingressmesh docker-filter": ("ingressmesh docker-filter --for l7-deploy --config l7.toml --listen "
                                  "/run/ingressmesh-docker/docker.sock -- ingressmesh l7 deploy --config l7.toml "
                                  "--docker unix:///run/ingressmesh-docker/docker.sock --watch"),
    "ingressmesh install": "ingressmesh install --stack --image ingressmesh/proxy:latest --l7-config l7.toml",
    "ingressmesh l7": "ingressmesh l7 deploy --config l7.toml --watch",
    "ingressmesh l7 deploy": "ingressmesh l7 deploy --config l7.toml --controller http://manager-1:9401 --watch",
    "ingressmesh l7 remove": "ingressmesh l7 remove --config l7.toml",
    "ingressmesh l7 state": "docker exec <proxy task container> ingressmesh l7 state --json",
    "ingressmesh l7 status": "ingressmesh l7 status --config l7.toml",
    "ingressmesh lab": "sudo ingressmesh lab up --nodes 3",
    "ingressmesh lab docker": "sudo ingressmesh lab docker 1 -- service ls",
    "ingressmesh lab down": "sudo ingressmesh lab down",
    "ingressmesh lab images": "sudo ingressmesh lab images busybox proxy",
    "ingressmesh lab image-store": "sudo ingressmesh lab image-store busybox proxy",
    "ingressmesh lab exec": "sudo ingressmesh lab exec client -- wget -qO- http://10.77.0.3:8000/",
    "ingressmesh lab show": "sudo ingressmesh lab show 2 --l7",
    "ingressmesh lab status": "sudo ingressmesh lab status",
    "ingressmesh lab up": "sudo ingressmesh lab up --nodes 3 --managers 1",
    "ingressmesh plan": "ingressmesh plan --cluster examples/demo-cluster.json --node node1",
    "ingressmesh proxy": ("ingressmesh proxy --controller http://manager-1:9401 "
                          "--token-file /run/secrets/ingressmesh_token --http-port 80 --https-port 443"),
    "ingressmesh show": "ingressmesh show --exec-root /run/docker --controller http://manager-1:9401",
    "ingressmesh token": "ingressmesh token reader --out /etc/ingressmesh/reader.token",
    "ingressmesh token node": ("ingressmesh token node --node-id $(docker info -f '{{.Swarm.NodeID}}') "
                               "--out /etc/ingressmesh/node.token"),
    "ingressmesh token reader": "ingressmesh token reader --out /etc/ingressmesh/reader.token",
}


def walk(command: click.Command, path: str = "ingressmesh"):
    """Every command of the tree as (path, command), parents first, children by name."""
    yield path, command
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            yield from walk(command.commands[name], f"{path} {name}")


def add_examples(root: click.Command) -> None:
    """Sets each command's epilog to its example (`\\b` keeps click from rewrapping it)."""
    for path, command in walk(root):
        example = EXAMPLES.get(path)
        if example:
            command.epilog = f"\b\nExample:\n  {example}"
